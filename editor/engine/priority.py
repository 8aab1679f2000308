"""Selection first: on a CPU, a click's model work goes before the next generation step.

The segmenter and the generation models have locks and queues of their own, so a click never
waits for a generation to end. On a CPU they still share the cores: a click made while another
tab generates would be slowed by every step running beside it. The gate pauses a generation at
its next step boundary (a diffusion step, an upscaler tile, an eraser region) while any
selection work runs, and lets it go on once none does. On a GPU the decoder runs beside a
generation: the gate is off there. Plain threading, no torch: the engine stays torch-free.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

RECHECK_S = 0.1  # a paused generation looks at its cancel flag this often


class SelectionFirst:
    """Counts the selection calls running; generation steps wait at their boundary while any do."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._changed = threading.Condition()
        self._running = 0  # selection calls in progress (nested calls count each)

    @staticmethod
    def for_device(device: str) -> SelectionFirst:
        """On for a CPU, where selection and generation share the cores; off for a GPU."""
        return SelectionFirst(enabled=device.split(":")[0] == "cpu")

    @contextmanager
    def selecting(self) -> Iterator[None]:
        """Around a selection call (an embedding, a click's mask, a detection)."""
        if not self.enabled:
            yield
            return
        with self._changed:
            self._running += 1
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                if not self._running:
                    self._changed.notify_all()

    def step_boundary(self, cancel: threading.Event | None = None) -> None:
        """Called by a generation between two steps: returns once no selection call runs (or at
        once when cancelled, so that the generation stops at this step as it would anyway)."""
        if not self.enabled:
            return
        with self._changed:
            while self._running and not (cancel is not None and cancel.is_set()):
                self._changed.wait(RECHECK_S)

    @property
    def selecting_now(self) -> bool:
        with self._changed:
            return self._running > 0
