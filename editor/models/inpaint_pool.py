"""Several inpainting models behind the one `Inpainter` interface (`inpaint.model` plus `inpaint.models`).

A request's `model` names the one that paints it ("" the first, `inpaint.model`). In the app's
process the members share one pipeline cache, so that together they stay under
`inpaint.memory_budget_gb`, the least recently used released first, as a multi-model endpoint
does; with `serving.backend: ray` each inpainter replica holds such a pool and the app holds one
client per member. Torch-free: the app, a replica and the remote clients all use it.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from editor.core.errors import ModelUnavailableError
from editor.models.base import Inpainter, InpaintRequest, Progress


class InpainterPool:
    """Inpainting models by name (an `InpainterChoice`); as an `Inpainter` it is its first (the default)
    for every request without `model`."""

    def __init__(self, members: Sequence[Inpainter]) -> None:
        if not members:
            raise ValueError("an inpainter pool needs at least one model")
        self._members = {member.model_name: member for member in members}
        self.default = members[0]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._members)

    def member(self, name: str) -> Inpainter:
        if not name:
            return self.default
        try:
            return self._members[name]
        except KeyError:
            raise ModelUnavailableError(f"no inpainting model {name!r} here: choose {' or '.join(self._members)} "
                                        "(inpaint.model and inpaint.models)") from None

    # The Inpainter interface: the default's status, the request's model for the work.
    @property
    def description(self) -> str:
        return self.default.description

    @property
    def model_name(self) -> str:
        return self.default.model_name

    @property
    def native_size(self) -> int:
        return self.default.native_size

    @property
    def load_error(self) -> str | None:
        return self.default.load_error

    def load(self) -> None:
        self.default.load()  # the others load at their first edit, within the memory budget

    def inpaint(self, image: np.ndarray, mask: np.ndarray, request: InpaintRequest, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> list[np.ndarray]:
        return self.member(request.model).inpaint(image, mask, request, progress, cancel)

