"""Stateless endpoints for `gradio_client`: segment, select by text, fill, erase, replace background.

The page's click handlers need browser event data and a session; these take everything as
arguments (an image file, points as JSON, a mask file, options as JSON) and return PNGs.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gradio as gr
import numpy as np

from editor.config import Config
from editor.engine import EditOptions, EditResult, Engine
from editor.errors import EditorError
from editor.imageio import load_image, load_mask
from editor.prompts import Prompts

OPTION_KEYS = {"negative_prompt": str, "steps": int, "guidance": float, "strength": float, "seed": int,
               "num_images": int}


class Api:
    def __init__(self, engine: Engine, config: Config) -> None:
        self.engine = engine
        self.config = config

    def segment(self, image: str | None, points: str, box: str) -> np.ndarray:
        """Mask (PNG, 255 = selected) of the object at `points` ([[x, y] or [x, y, label], ...]; label 1 =
        object, 0 = not the object) and/or inside `box` ([x1, y1, x2, y2]), in the image's pixels."""
        with _client_errors():
            photo = self._image(image)
            return self.engine.select(photo, parse_prompts(points, box))

    def select_by_text(self, image: str | None, query: str) -> tuple[np.ndarray, dict]:
        """Mask (PNG) of every instance of what `query` names ("dog", "person, bicycle"), and what was
        detected: {"detections": [{"label", "score", "box": [x1, y1, x2, y2]}, ...]} in the image's pixels."""
        with _client_errors():
            found = self.engine.select_by_text(self._image(image), query or "")
            detections = [{"label": d.label, "score": round(d.score, 4), "box": [round(v, 1) for v in d.box]}
                          for d in found.detections]
            return found.mask, {"detections": detections}

    def fill(self, image: str | None, mask: str | None, prompt: str, options: str) -> tuple[np.ndarray, dict]:
        """Paint what `prompt` describes into the mask. Returns the PNG and the edit's metadata (seed...)."""
        with _client_errors():
            photo, selection = self._image_and_mask(image, mask)
            return _first(self.engine.fill(photo, selection, prompt or "", parse_options(options)))

    def erase(self, image: str | None, mask: str | None, options: str) -> tuple[np.ndarray, dict]:
        """Remove what the mask covers. Returns the PNG and the edit's metadata."""
        with _client_errors():
            photo, selection = self._image_and_mask(image, mask)
            return _first(self.engine.erase(photo, selection, parse_options(options)))

    def replace_background(self, image: str | None, mask: str | None, prompt: str,
                           options: str) -> tuple[np.ndarray, dict]:
        """Keep the subject (the mask) and paint a new background from `prompt`."""
        with _client_errors():
            photo, subject = self._image_and_mask(image, mask)
            return _first(self.engine.replace_background(photo, subject, prompt or "", parse_options(options)))

    def _image(self, path: str | None) -> np.ndarray:
        if not path:
            raise EditorError("send an image file")
        return load_image(path, self.config.max_image_pixels)

    def _image_and_mask(self, image: str | None, mask: str | None) -> tuple[np.ndarray, np.ndarray]:
        photo = self._image(image)
        if not mask:
            raise EditorError("send a mask file (a PNG the size of the image, white = selected)")
        height, width = photo.shape[:2]
        return photo, load_mask(mask, (width, height), self.config.max_image_pixels)


@contextmanager
def _client_errors() -> Iterator[None]:
    """A person's error goes back to the client as its one-line message."""
    try:
        yield
    except EditorError as exc:
        raise gr.Error(str(exc)) from None


def _first(result: EditResult) -> tuple[np.ndarray, dict]:
    return result.images[0], dict(result.metadata)


def parse_prompts(points: str, box: str) -> Prompts:
    """Prompts from JSON text: points [[x, y], [x, y, 0], ...] and an optional box [x1, y1, x2, y2]."""
    prompts = Prompts()
    for item in _json(points, "points", []):
        if not isinstance(item, list) or len(item) not in (2, 3) or not all(_is_number(v) for v in item):
            raise EditorError(f"each point must be [x, y] or [x, y, label], got {json.dumps(item)}")
        label = int(item[2]) if len(item) == 3 else 1
        if label not in (0, 1):
            raise EditorError(f"a point's label must be 1 (object) or 0 (not the object), got {item[2]}")
        prompts = prompts.add_point(float(item[0]), float(item[1]), positive=bool(label))
    corners = _json(box, "box", None)
    if corners is not None:
        if not isinstance(corners, list) or len(corners) != 4 or not all(_is_number(v) for v in corners):
            raise EditorError(f"box must be [x1, y1, x2, y2], got {json.dumps(corners)}")
        prompts = prompts.with_box(tuple(float(v) for v in corners))  # type: ignore[arg-type]
    if prompts.is_empty:
        raise EditorError("give at least one point or a box")
    return prompts


def parse_options(text: str) -> EditOptions:
    """EditOptions from JSON text, e.g. {"steps": 30, "seed": 7}; missing keys take the defaults."""
    values = _json(text, "options", {})
    if not isinstance(values, dict):
        raise EditorError('options must be a JSON object such as {"steps": 30, "seed": 7}')
    unknown = sorted(set(values) - set(OPTION_KEYS))
    if unknown:
        raise EditorError(f"unknown option {unknown[0]!r}; known: {', '.join(OPTION_KEYS)}")
    checked = {}
    for key, value in values.items():
        kind = OPTION_KEYS[key]
        if value is None:
            continue
        if kind is str and not isinstance(value, str):
            raise EditorError(f"option {key} must be text")
        if kind is not str and not _is_number(value):
            raise EditorError(f"option {key} must be a number, got {json.dumps(value)}")
        if kind is int and float(value) != int(value):
            raise EditorError(f"option {key} must be a whole number, got {value}")
        checked[key] = kind(value)
    return EditOptions(**checked)


def _json(text: str | None, what: str, empty: Any) -> Any:
    if text is None or not str(text).strip():
        return empty
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise EditorError(f"{what} is not valid JSON: {exc.msg} at character {exc.pos}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
