"""Stateless endpoints for `gradio_client`: segment, select by text, fill, erase, replace background.

The page's click handlers need browser event data and a session; these take everything as
arguments (an image file, points as JSON, a mask file, options as JSON) and return PNGs.

Safe to serve on a network: the endpoints take their arguments raw (`preprocess=False`), so
that a file is read only when it was uploaded with the request (`editor.ui.uploads`), every
argument is checked against the limits before any work, and every failure reaches the client
as one line (`editor.core.errors.describe`). The work runs in a thread that stops within a step
when the client cancels its job or goes away, and the model's queue slot is held until it has.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import numpy as np
from gradio.context import LocalContext

from editor.core.config import Config, LimitsConfig
from editor.engine.ops import EditOptions, EditResult, Engine
from editor.core.errors import EditorError, ImageError, SelectionError, describe
from editor.core.photo_io import load_image, load_mask
from editor.models.base import Progress
from editor.core.prompts import Prompts, check_prompt_count
from editor.ui.uploads import checked_upload

OPTION_KEYS = {"negative_prompt": str, "steps": int, "guidance": float, "strength": float, "seed": int,
               "num_images": int, "generative": bool, "model": str}
CLIENT_CHECK_S = 0.2  # how often a running job looks whether its client is still there

log = logging.getLogger(__name__)
T = TypeVar("T")
Gallery = list[tuple[np.ndarray, str]]


class Api:
    def __init__(self, engine: Engine, config: Config, allowed: Sequence[Path] = ()) -> None:
        self.engine = engine
        self.config = config
        self.limits = config.limits
        self.allowed = tuple(allowed)  # folders besides Gradio's upload cache whose files may be named

    async def segment(self, image: Any, points: Any, box: Any) -> np.ndarray:
        """Mask (PNG, 255 = selected) of the object at `points` ([[x, y] or [x, y, label], ...]; label 1 =
        object, 0 = not the object) and/or inside `box` ([x1, y1, x2, y2]), in the image's pixels."""
        def work(cancel: threading.Event) -> np.ndarray:
            prompts = parse_prompts(points, box, self.limits)  # the cheap checks before reading the file
            return self.engine.select(self._image(image), prompts)

        return await self._run("/segment", work)

    async def select_by_text(self, image: Any, query: Any) -> tuple[np.ndarray, dict]:
        """Mask (PNG) of every instance of what `query` names ("dog", "person, bicycle"), and what was
        detected: {"detections": [{"label", "score", "box": [x1, y1, x2, y2]}, ...]} in the image's pixels."""
        def work(cancel: threading.Event) -> tuple[np.ndarray, dict]:
            text = _text(query, "query", self.limits)
            found = self.engine.select_by_text(self._image(image), text)
            detections = [{"label": d.label, "score": round(d.score, 4), "box": [round(v, 1) for v in d.box]}
                          for d in found.detections]
            return found.mask, {"detections": detections}

        return await self._run("/select_by_text", work)

    async def fill(self, image: Any, mask: Any, prompt: Any, options: Any,
                   progress: gr.Progress = gr.Progress()) -> tuple[Gallery, dict]:
        """Paint what `prompt` describes into the mask. Returns every variation and the edit's metadata."""
        def work(cancel: threading.Event) -> tuple[Gallery, dict]:
            text, chosen = _text(prompt, "prompt", self.limits), parse_options(options, self.limits)
            photo, selection = self._image_and_mask(image, mask)
            return variations(self.engine.fill(photo, selection, text, chosen, _steps(progress), cancel))

        return await self._run("/fill", work)

    async def erase(self, image: Any, mask: Any, options: Any,
                    progress: gr.Progress = gr.Progress()) -> tuple[Gallery, dict]:
        """Remove what the mask covers. Returns every variation and the edit's metadata."""
        def work(cancel: threading.Event) -> tuple[Gallery, dict]:
            chosen = parse_options(options, self.limits)
            photo, selection = self._image_and_mask(image, mask)
            return variations(self.engine.erase(photo, selection, chosen, _steps(progress), cancel))

        return await self._run("/erase", work)

    async def replace_background(self, image: Any, mask: Any, prompt: Any, options: Any,
                                 progress: gr.Progress = gr.Progress()) -> tuple[Gallery, dict]:
        """Keep the subject (the mask) and paint a new background from `prompt`."""
        def work(cancel: threading.Event) -> tuple[Gallery, dict]:
            text, chosen = _text(prompt, "prompt", self.limits), parse_options(options, self.limits)
            photo, subject = self._image_and_mask(image, mask)
            return variations(self.engine.replace_background(photo, subject, text, chosen, _steps(progress),
                                                             cancel))

        return await self._run("/replace_background", work)

    async def _run(self, where: str, work: Callable[[threading.Event], T]) -> T:
        """`work(cancel)` in a worker thread. A cancelled job (gradio_client's `job.cancel()`) or a client
        that went away sets `cancel`, which the generation checks after each step; the job ends only
        once the work has stopped, so the next job in the queue never runs beside it."""
        cancel = threading.Event()
        task = asyncio.ensure_future(asyncio.to_thread(work, cancel))
        watcher = asyncio.ensure_future(_cancel_when_client_leaves(cancel))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:  # Gradio's /cancel: its thread would run on and hold the model
            cancel.set()
            await _wait_out(task)
            log.warning("%s cancelled by the client", where)
            raise
        except Exception as exc:
            raise gr.Error(describe(exc, log, where), print_exception=False) from None
        finally:
            watcher.cancel()

    def _image(self, payload: Any) -> np.ndarray:
        return load_image(checked_upload(payload, self.allowed), self.config.max_image_pixels)

    def _image_and_mask(self, image: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
        photo = self._image(image)
        if mask is None:
            raise ImageError("send a mask file (a PNG the size of the image, white = selected)")
        height, width = photo.shape[:2]
        return photo, load_mask(checked_upload(mask, self.allowed), (width, height), self.config.max_image_pixels)


def variations(result: EditResult) -> tuple[Gallery, dict]:
    """Every variation, captioned, and the edit's metadata with each variation's number and seed
    (the variations of one edit share its seed: variation n is the n-th image made from it)."""
    numbered = list(enumerate(result.images, start=1))
    gallery = [(image, f"variation {n} · seed {result.seed}") for n, image in numbered]
    metadata = {**result.metadata, "variations": [{"variation": n, "seed": result.seed} for n, _ in numbered]}
    return gallery, metadata


async def _wait_out(task: asyncio.Future) -> None:
    """Wait until `task` is done, through further cancellations (a second /cancel)."""
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            continue
    if not task.cancelled():
        task.exception()  # retrieved: the cancellation is what the client asked for


async def _cancel_when_client_leaves(cancel: threading.Event) -> None:
    while not cancel.is_set():
        await asyncio.sleep(CLIENT_CHECK_S)
        if not _client_connected():
            cancel.set()


def _client_connected() -> bool:
    """False once Gradio's queue has marked this job's client as gone.

    Gradio 6.31 marks the running events of a disconnected client `alive = False`
    (`Queue.clean_events`) but lets their function run on; its queue is the only place that
    shows it, so this reads it defensively: anything unexpected counts as connected.
    """
    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    jobs = getattr(getattr(blocks, "_queue", None), "active_jobs", None) or []
    for job in jobs:
        for event in job or []:
            if getattr(event, "_id", None) == event_id:
                return bool(getattr(event, "alive", True))
    return True


def _steps(progress: gr.Progress) -> Progress:
    def step(done: int, total: int) -> None:
        progress((done, total), desc="Generating", unit="steps")

    return step


def parse_prompts(points: Any, box: Any, limits: LimitsConfig) -> Prompts:
    """Prompts from JSON text: points [[x, y], [x, y, 0], ...] and an optional box [x1, y1, x2, y2]."""
    items = _json(points, "points", [], limits)
    if items is None:
        items = []
    if not isinstance(items, list):
        raise SelectionError(f"points must be a list such as [[x, y], [x, y, 0]], got {_show(items)}")
    corners = _json(box, "box", None, limits)
    check_prompt_count(len(items) + (corners is not None), limits.points)
    prompts = Prompts()
    for item in items:
        if not isinstance(item, list) or len(item) not in (2, 3) or not all(_is_number(v) for v in item):
            raise SelectionError(f"each point must be [x, y] or [x, y, label], got {_show(item)}")
        if len(item) == 3 and item[2] not in (0, 1):  # 0.5 is refused, never truncated
            raise SelectionError(f"a point's label must be 1 (object) or 0 (not the object), got {_show(item[2])}")
        prompts = prompts.add_point(float(item[0]), float(item[1]), positive=len(item) == 2 or item[2] == 1)
    if corners is not None:
        if not isinstance(corners, list) or len(corners) != 4 or not all(_is_number(v) for v in corners):
            raise SelectionError(f"box must be [x1, y1, x2, y2], got {_show(corners)}")
        prompts = prompts.with_box(tuple(float(v) for v in corners))  # type: ignore[arg-type]
    if prompts.is_empty:
        raise SelectionError("give at least one point or a box")
    return prompts


def parse_options(text: Any, limits: LimitsConfig) -> EditOptions:
    """EditOptions from JSON text, e.g. {"steps": 30, "seed": 7}; missing keys take the defaults."""
    values = _json(text, "options", {}, limits)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise EditorError('options must be a JSON object such as {"steps": 30, "seed": 7}')
    unknown = sorted(set(values) - set(OPTION_KEYS))
    if unknown:
        raise EditorError(f"unknown option {_show(unknown[0])}; known: {', '.join(OPTION_KEYS)}")
    checked = {}
    for key, value in values.items():
        kind = OPTION_KEYS[key]
        if value is None:
            continue
        if kind is str and not isinstance(value, str):
            raise EditorError(f"option {key} must be text")
        if kind is bool and not isinstance(value, bool):
            raise EditorError(f"option {key} must be true or false, got {_show(value)}")
        if kind not in (str, bool) and not _is_number(value):
            raise EditorError(f"option {key} must be a number, got {_show(value)}")
        if kind is int and float(value) != int(value):
            raise EditorError(f"option {key} must be a whole number, got {_show(value)}")
        checked[key] = kind(value)
    return EditOptions(**checked)


def _text(value: Any, what: str, limits: LimitsConfig) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise EditorError(f"{what} must be text")
    if len(value) > limits.prompt_chars:
        raise EditorError(f"{what} is {len(value)} characters long; at most {limits.prompt_chars} "
                          "(limits.prompt_chars)")
    return value


def _json(text: Any, what: str, empty: Any, limits: LimitsConfig) -> Any:
    """Parse JSON text within the size and depth limits (checked before parsing: deep nesting
    would exhaust the parser's recursion)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return empty
    if not isinstance(text, str):
        raise EditorError(f"{what} must be JSON text, got {type(text).__name__}")
    if len(text) > limits.json_chars:
        raise EditorError(f"{what} is {len(text)} characters of JSON; at most {limits.json_chars} "
                          "(limits.json_chars)")
    if _depth(text) > limits.json_depth:
        raise EditorError(f"{what} is nested {_depth(text)} levels deep; at most {limits.json_depth} "
                          "(limits.json_depth)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EditorError(f"{what} is not valid JSON: {exc.msg} at character {exc.pos}") from None


def _depth(text: str) -> int:
    """The deepest nesting of [ and { in JSON text, outside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _show(value: Any) -> str:
    """A value quoted in a message: short, one line."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
