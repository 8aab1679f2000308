"""`python -m editor loadtest`: Locust against the app's Gradio API, on loopback only."""
