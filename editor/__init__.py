"""A local AI photo editor: SAM selections and Stable Diffusion inpainting."""
