"""The errors a person can act on. Each message is one line, shown as-is in the CLI and the page."""


class EditorError(Exception):
    """A problem the user can fix; its message is one line shown as-is."""


class ConfigError(EditorError):
    """config.yaml or a --set override names an unknown key or holds a bad value."""


class ImageError(EditorError):
    """An input image is missing, empty, corrupt, not an image, or too large."""


class SelectionError(EditorError):
    """The prompts or the mask cannot give a usable selection (out of bounds, empty)."""


class ModelUnavailableError(EditorError):
    """The operation needs model weights that are not on this machine."""


class EditCancelled(EditorError):
    """The person cancelled a running generation."""


class ModelLoadError(ModelUnavailableError):
    """A model's weights are here but failed to load; the reason is remembered, not retried."""
