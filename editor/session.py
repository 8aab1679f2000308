"""One person's editing session: the working photo's history, the selection, the last variations.

Plain data and pure logic: no torch, no Gradio. The UI keeps one `Session` per browser session
(in `gr.State`) and asks the engine for masks; the session only combines and remembers them.
Images are full-resolution `HxWx3 uint8` arrays; masks are `HxW uint8` (255 = selected).
"""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from editor import masks
from editor.errors import EditorError, SelectionError
from editor.prompts import Detection, Point, Prompts, SelectionPart, detected_parts, route_point

ClickMode = Literal["add", "remove", "box", "drop"]  # drop: take a detected object out of the selection
Segment = Callable[[np.ndarray, Prompts], np.ndarray]  # engine.select: (image, prompts) -> mask
Detect = Callable[[np.ndarray, str], list[Detection]]  # engine.detect: (image, query) -> detections

MAX_VERSIONS = 30  # full-resolution copies kept per session; the oldest edits go first


@dataclass(frozen=True)
class Version:
    """One state of the working photo."""

    image: np.ndarray
    label: str  # "original", "erase", "fill: a red hat"
    metadata: dict[str, str]
    number: int  # unique within the session; names the download file


@dataclass(frozen=True)
class Selection:
    """Everything that defines the selection; immutable, so each step can be undone."""

    parts: tuple[SelectionPart, ...] = (SelectionPart(),)  # the last part is the one clicks go to
    pending_corner: Point | None = None  # first corner of a box in box mode
    inverted: bool = False
    brush_add: np.ndarray | None = None  # painted by hand into the selection
    brush_remove: np.ndarray | None = None  # painted by hand out of the selection

    @property
    def current(self) -> SelectionPart:
        return self.parts[-1]

    @property
    def is_empty(self) -> bool:
        """Nothing clicked, painted or inverted yet."""
        no_prompts = all(part.prompts.is_empty for part in self.parts)
        return no_prompts and self.brush_add is None and not self.inverted and self.pending_corner is None

    def with_current(self, part: SelectionPart) -> Selection:
        return replace(self, parts=self.parts[:-1] + (part,), pending_corner=None)

    def with_part(self, index: int, part: SelectionPart) -> Selection:
        parts = self.parts[:index] + (part,) + self.parts[index + 1:]
        return replace(self, parts=parts, pending_corner=None)


@dataclass(frozen=True)
class Variations:
    """The images of the last edit; `number` is the version that shows the chosen one."""

    images: list[np.ndarray]
    metadata: dict[str, str]
    label: str
    number: int
    chosen: int = 0


class CancelEvent(threading.Event):
    """A cancel flag that Gradio's per-session deepcopy of the initial state can copy."""

    def __deepcopy__(self, memo: dict) -> CancelEvent:
        return CancelEvent()


@dataclass
class Session:
    versions: list[Version] = field(default_factory=list)
    index: int = -1  # the working version
    name: str = "photo"  # the uploaded file's stem, for download names
    grow_px: int = 0  # grow (or, negative, shrink) the selection before editing
    feather_px: int = 8  # soft edge of the paste-back
    variations: Variations | None = None
    edits_pending: int = 0  # edits queued or running
    cancel: CancelEvent = field(default_factory=CancelEvent)
    _selections: list[Selection] = field(default_factory=lambda: [Selection()])
    _mask_cache: dict[Prompts, np.ndarray] = field(default_factory=dict)
    _uid: str = ""  # set on first use, so that each deep copy of a fresh session gets its own
    _counter: int = 0

    # --- the photo and its history ---------------------------------------------------------

    @property
    def uid(self) -> str:
        """A unique name for this session (its download folder)."""
        if not self._uid:
            self._uid = uuid.uuid4().hex
        return self._uid

    @property
    def has_image(self) -> bool:
        return self.index >= 0

    @property
    def image(self) -> np.ndarray:
        """The working photo at full resolution."""
        if not self.has_image:
            raise EditorError("upload a photo first")
        return self.versions[self.index].image

    @property
    def version(self) -> Version:
        self.image  # noqa: B018 - raises when there is no photo
        return self.versions[self.index]

    @property
    def previous(self) -> Version | None:
        """The version before the working one, for the before/after view."""
        return self.versions[self.index - 1] if self.index > 0 else None

    def open(self, image: np.ndarray, name: str = "photo") -> None:
        """Start over with a new photo."""
        self.versions = [self._new_version(image, "original", {})]
        self.index = 0
        self.name = name
        self.variations = None
        self._reset_selection()

    def close(self) -> None:
        self.versions, self.index, self.variations = [], -1, None
        self._reset_selection()

    def commit(self, image: np.ndarray, label: str, metadata: dict[str, str]) -> Version:
        """Make an edit's result the working photo; later versions (redo) are dropped."""
        self.image  # noqa: B018 - raises when there is no photo
        version = self._new_version(image, label, metadata)
        self.versions = self.versions[: self.index + 1] + [version]
        if len(self.versions) > MAX_VERSIONS:
            del self.versions[1]  # keep the original
        self.index = len(self.versions) - 1
        self._reset_selection()
        return version

    def add_result(self, images: list[np.ndarray], metadata: dict[str, str], label: str) -> None:
        """Commit the first variation and keep all of them for choosing."""
        if not images:
            raise EditorError("the edit returned no image")
        version = self.commit(images[0], label, _variation_metadata(metadata, 0, len(images)))
        self.variations = Variations(list(images), metadata, label, version.number) if len(images) > 1 else None

    def choose_variation(self, chosen: int) -> None:
        """Let another variation of the last edit continue, in place of the one shown."""
        variations = self.variations
        if variations is None or not 0 <= chosen < len(variations.images):
            raise EditorError("there is no such variation")
        if self.version.number != variations.number:
            raise EditorError("the variations belong to an edit that is no longer the working photo")
        metadata = _variation_metadata(variations.metadata, chosen, len(variations.images))
        version = self._new_version(variations.images[chosen], variations.label, metadata)
        self.versions[self.index] = version
        self.variations = replace(variations, number=version.number, chosen=chosen)
        self._reset_selection()

    @property
    def can_undo(self) -> bool:
        return self.index > 0

    @property
    def can_redo(self) -> bool:
        return 0 <= self.index < len(self.versions) - 1

    def undo(self) -> None:
        if not self.can_undo:
            raise EditorError("nothing to undo: this is the original photo")
        self.goto(self.index - 1)

    def redo(self) -> None:
        if not self.can_redo:
            raise EditorError("nothing to redo")
        self.goto(self.index + 1)

    def goto(self, index: int) -> None:
        if not 0 <= index < len(self.versions):
            raise EditorError(f"there is no version {index}")
        if index != self.index:
            self.index = index
            self._reset_selection()

    # --- the selection ---------------------------------------------------------------------

    @property
    def selection(self) -> Selection:
        return self._selections[-1]

    def click(self, x: float, y: float, mode: ClickMode) -> None:
        """A click on the photo, in full-resolution pixels, in one of the click modes."""
        height, width = self.image.shape[:2]
        x, y = min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)
        if mode == "box":
            self._box_corner(x, y)
        elif mode == "drop":
            self._drop(x, y)
        else:
            self._point(x, y, positive=mode == "add")

    def _box_corner(self, x: float, y: float) -> None:
        selection = self.selection
        if selection.pending_corner is None:
            self._push(replace(selection, pending_corner=(x, y)))
            return
        (x0, y0) = selection.pending_corner
        if abs(x - x0) < 2 or abs(y - y0) < 2:
            raise SelectionError("the box is too thin: click two opposite corners of the object")
        prompts = selection.current.prompts.with_box((min(x0, x), min(y0, y), max(x0, x), max(y0, y)))
        self._push(selection.with_current(replace(selection.current, prompts=prompts)))

    def _drop(self, x: float, y: float) -> None:
        """Take the detected object whose box holds (x, y) out of the selection."""
        selection = self.selection
        index = route_point(selection.parts, x, y)
        if index is None:
            raise SelectionError("click inside one of the boxes that Select by name found to drop it")
        self._push(replace(selection, parts=selection.parts[:index] + selection.parts[index + 1:],
                           pending_corner=None))

    def _point(self, x: float, y: float, positive: bool) -> None:
        """A point inside a detected box refines that object; elsewhere it goes to the current one."""
        selection = self.selection
        index = route_point(selection.parts, x, y)
        index = len(selection.parts) - 1 if index is None else index
        part = selection.parts[index]
        if not positive and not _has_anchor(part.prompts):
            raise SelectionError("click the object first (+), then the parts to leave out (-)")
        self._push(selection.with_part(index, replace(part, prompts=part.prompts.add_point(x, y, positive))))

    def select_by_name(self, query: str, detect: Detect) -> list[Detection]:
        """Add every object `detect` finds for `query` to the selection, one part (a box) each;
        clicks then go to a new object, or refine a detected one when inside its box."""
        detections = detect(self.image, query)
        selection = self.selection
        kept = tuple(part for part in selection.parts if not part.prompts.is_empty)
        parts = kept + detected_parts(detections) + (SelectionPart(),)
        self._push(replace(selection, parts=parts, pending_corner=None))
        return detections

    def new_part(self, subtract: bool) -> None:
        """Start another object that adds to (or is cut out of) the selection."""
        selection = self.selection
        if selection.current.prompts.is_empty:  # reuse an empty part, just flip its sign
            self._push(selection.with_current(SelectionPart(subtract=subtract)))
        else:
            self._push(replace(selection, parts=selection.parts + (SelectionPart(subtract=subtract),),
                               pending_corner=None))

    def invert(self) -> None:
        self._push(replace(self.selection, inverted=not self.selection.inverted))

    def paint(self, add: np.ndarray | None, remove: np.ndarray | None) -> None:
        """Brush strokes (full-resolution bool or 0/255 masks): later strokes win over earlier ones."""
        shape = self.image.shape[:2]
        old = self.selection
        brush_add = _zeros(shape) if old.brush_add is None else old.brush_add
        brush_remove = _zeros(shape) if old.brush_remove is None else old.brush_remove
        if add is not None and np.any(add):
            brush_add, brush_remove = masks.union(brush_add, add), masks.subtract(brush_remove, add)
        if remove is not None and np.any(remove):
            brush_add, brush_remove = masks.subtract(brush_add, remove), masks.union(brush_remove, remove)
        self._push(replace(old, brush_add=_none_if_empty(brush_add), brush_remove=_none_if_empty(brush_remove)))

    def undo_click(self) -> None:
        """Take back the last selection step (a click, a box corner, a new part, invert, a brush)."""
        if len(self._selections) == 1:
            raise EditorError("no selection step to undo")
        self._selections.pop()

    def clear_selection(self) -> None:
        if not self.selection.is_empty:
            self._push(Selection())

    def selection_mask(self, segment: Segment) -> np.ndarray:
        """The selection as a binary mask, before grow: objects, inversion, then brush strokes.

        `segment` computes one object's mask; results are cached per prompts for this version.
        """
        image = self.image
        selection = self.selection
        combined = _zeros(image.shape[:2])
        for part in selection.parts:
            if not _has_anchor(part.prompts):
                continue
            mask = self._segment(segment, part.prompts)
            combined = masks.subtract(combined, mask) if part.subtract else masks.union(combined, mask)
        if selection.inverted:
            combined = masks.invert(combined)
        if selection.brush_add is not None:
            combined = masks.union(combined, selection.brush_add)
        if selection.brush_remove is not None:
            combined = masks.subtract(combined, selection.brush_remove)
        return combined

    def edit_mask(self, segment: Segment) -> np.ndarray:
        """The mask an edit uses: the selection grown (or shrunk) by the grow slider."""
        return masks.grow(self.selection_mask(segment), self.grow_px)

    def preview_mask(self, segment: Segment) -> np.ndarray:
        """What the page shows: grown, with the soft edge the paste-back will have."""
        return masks.refine(self.selection_mask(segment), self.grow_px, self.feather_px)

    # --- a running edit --------------------------------------------------------------------

    def begin_edit(self) -> None:
        self.edits_pending += 1

    def end_edit(self) -> None:
        self.edits_pending = max(0, self.edits_pending - 1)
        if self.edits_pending == 0:
            self.cancel.clear()

    def request_cancel(self) -> bool:
        """Ask the running (or queued) edits to stop; False when there is none."""
        if self.edits_pending == 0:
            return False
        self.cancel.set()
        return True

    # --- internals -------------------------------------------------------------------------

    def _new_version(self, image: np.ndarray, label: str, metadata: dict[str, str]) -> Version:
        self._counter += 1
        return Version(_frozen_copy(image), label, dict(metadata), self._counter)

    def _reset_selection(self) -> None:
        self._selections = [Selection()]
        self._mask_cache = {}

    def _push(self, selection: Selection) -> None:
        self._selections.append(selection)

    def _segment(self, segment: Segment, prompts: Prompts) -> np.ndarray:
        if prompts not in self._mask_cache:
            self._mask_cache[prompts] = masks.binary(segment(self.image, prompts))
        return self._mask_cache[prompts]


def _has_anchor(prompts: Prompts) -> bool:
    """A positive point or a box: what SAM needs to know which object is meant."""
    return prompts.box is not None or 1 in prompts.labels


def _frozen_copy(image: np.ndarray) -> np.ndarray:
    """A read-only copy of its own: a version never changes, so caches keyed on it stay right."""
    frozen = np.array(image, order="C", copy=True)
    frozen.flags.writeable = False
    return frozen


def _zeros(shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros(shape[:2], np.uint8)


def _none_if_empty(mask: np.ndarray) -> np.ndarray | None:
    return mask if np.any(mask) else None


def _variation_metadata(metadata: dict[str, str], chosen: int, count: int) -> dict[str, str]:
    if count == 1:
        return dict(metadata)
    return {**metadata, "variation": f"{chosen + 1} of {count}"}
