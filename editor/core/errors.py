"""The errors a person can act on. Each message is one line, shown as-is in the CLI and the page."""
from __future__ import annotations

import logging
import secrets

MAX_MESSAGE = 500  # characters of a message shown to a person


class EditorError(Exception):
    """A problem the user can fix; its message is one line shown as-is."""


class ConfigError(EditorError):
    """config.yaml or a --set override names an unknown key or holds a bad value."""


class BackendUnreachable(ConfigError):
    """serving.backend: ray, and the Ray cluster cannot be reached or runs none of the deployments."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem}: start the models with `python -m editor serve`, "
                         "or run them in the app with --set serving.backend=local")
        self.problem = problem


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


def describe(exc: BaseException, log: logging.Logger, where: str) -> str:
    """The one line a person sees for a failure in `where` (an endpoint or a handler), logged once.

    A person's error (EditorError) is its own message and a short line in the log. Anything
    else is a bug or a library failure: the log gets its traceback once, under a short id that
    the person's line names, and the line tells nothing of the internals (paths, values).
    """
    if isinstance(exc, EditorError):
        message = " ".join(str(exc).split())[:MAX_MESSAGE]  # one line, whatever the message held
        log.warning("%s refused: %s", where, message)
        return message
    if type(exc).__name__ == "OutOfMemoryError":  # torch's, on the GPU: the person can act on it
        log.warning("%s: out of memory", where)
        return "out of memory: try a smaller photo or selection, fewer variations, or set inpaint.cpu_offload=true"
    error_id = secrets.token_hex(4)
    log.error("%s failed: error %s", where, error_id, exc_info=exc)
    return f"unexpected error {error_id} ({type(exc).__name__}); the server log has the details"
