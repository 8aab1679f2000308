"""One person's editing session: every photo they opened and its version tree, the selection, the
last variations, and whether an edit runs.

Plain data, no torch, no Gradio. Sessions are made and found by `SessionStore`
(editor/session_store.py), which owns the folder each one is saved in and the memory budget they
share. Every change is written to the folder at once (disk is the truth); pixels in memory are a
cache the store may drop, read back from the folder when asked for. Images are full-resolution
`HxWx3 uint8` arrays; masks are `HxW uint8` (255 = selected).
"""
from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import numpy as np

from editor.session import history
from editor.core import masks
from editor.core.display import display_scale
from editor.core.errors import EditorError, SelectionError
from editor.core.photo_io import PhotoInfo
from editor.session.history import Box, History, Version
from editor.session.pixel_cache import PixelCache
from editor.core.prompts import (
    Detection,
    Point,
    Prompts,
    SelectionPart,
    detected_parts,
    part_from_json,
    part_to_json,
    route_point,
)
from editor.session.files import DamagedSession, SessionFolder

ClickMode = Literal["add", "remove", "box", "drop"]  # drop: take a detected object out of the selection
Segment = Callable[[np.ndarray, Prompts], np.ndarray]  # engine.select: (image, prompts) -> mask
Detect = Callable[[np.ndarray, str], list[Detection]]  # engine.detect: (image, query) -> detections

FULL_IMAGES_PER_SESSION = 3  # rebuilt photos kept in memory per session: the working one, its parent, one more
MASKS_PER_SESSION = 4  # one object's mask per prompts, for the working version
__all__ = ["ClickMode", "Detect", "Segment", "Selection", "Session", "Variations", "Version"]

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _locked(method: _Method) -> _Method:
    """Run a method under the session's lock: an edit's commit, a click and the store's expiry may
    come from different threads."""
    @functools.wraps(method)
    def run(self: Session, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return run  # type: ignore[return-value]


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
    """The images of the last edit, kept as changes over its base in the session's folder;
    `number` is the version that shows the chosen one."""

    number: int
    base: int  # the version the edit started from
    label: str
    metadata: dict[str, str]
    thumbnails: tuple[np.ndarray, ...]
    boxes: tuple[Box | None, ...]  # what each changed over the base (see history.Node.box)
    sizes: tuple[tuple[int, int], ...]  # (width, height) of each
    key: int  # names their files
    chosen: int = 0

    @property
    def count(self) -> int:
        return len(self.thumbnails)


class Session:
    """One person's photos, history and selection. Made by `SessionStore.create` or `.get`."""

    def __init__(self, session_id: str, folder: SessionFolder, cache: PixelCache, feather_px: int = 8) -> None:
        self.id = session_id
        self._folder, self._cache = folder, cache
        self._lock = threading.RLock()
        self._history = History()
        self._names: dict[int, str] = {}  # the original's number -> the photo's name (download names)
        self._infos: dict[int, PhotoInfo] = {}  # the original's number -> its profile and metadata (downloads, display)
        self._grow_px, self._feather_px = 0, feather_px
        self.variations: Variations | None = None
        self.edits_pending = 0  # edits queued or running
        self.last_action = "fill"  # what Enter in the prompt runs: the last of fill, background, outpaint
        self.cancel = threading.Event()  # set by Cancel; the running edit checks it between steps
        self._selections: list[Selection] = [Selection()]
        self._undone: list[Selection] = []  # selection steps taken back, newest last: what redo_click brings back
        self._brush_files: dict[str, tuple[np.ndarray, str]] = {}  # "add"/"remove" -> (the saved array, its file)
        self._brush_count = 0
        self.last_used = time.time()

    @classmethod
    def new(cls, session_id: str, folder: SessionFolder, cache: PixelCache, feather_px: int = 8) -> Session:
        """An empty session, its folder written at once (so that it can be found after a restart)."""
        session = cls(session_id, folder, cache, feather_px)
        with session._lock:
            session._save()
        return session

    def touch(self) -> None:
        """Mark the session as used now (its time to live starts again), in memory and on disk."""
        self.last_used = time.time()
        self._folder.touch()

    @_locked
    def drop_cached_pixels(self) -> None:
        """Free the memory of this session's rebuilt images, deltas and masks (a closed tab); they
        are read back from the folder when next asked for."""
        for kind in ("full", "delta", "mask"):
            self._cache.drop_session(self.id, kind)

    @_locked
    def delete_files(self) -> None:
        """Delete the folder; afterwards the session refuses to save (it has expired)."""
        self._folder.delete()

    def __deepcopy__(self, memo: dict) -> Session:
        # gr.State deep-copies its initial value for each tab: a copy would fork the saved session,
        # and returning the same one would share it between tabs. Keep the id, get the session.
        raise TypeError("a Session cannot be copied: keep its id (gr.BrowserState) and get it from the SessionStore")

    # --- settings saved with the session -----------------------------------------------------

    @property
    def name(self) -> str:
        """The working photo's name (the uploaded file's stem), for download names."""
        with self._lock:
            if self._history.working is None:
                return "photo"
            return self._names.get(self._history.root(self._history.working), "photo")

    @name.setter
    def name(self, value: str) -> None:
        with self._lock:
            if self._history.working is not None:
                self._names[self._history.root(self._history.working)] = str(value)
                self._save()

    # Grow and Soft edge are set by eye: in pixels of the photo as shown (its display copy), so that
    # a band looks the same on any photo. The edits use them in the photo's pixels (`photo_px`).
    @property
    def grow_px(self) -> int:
        return self._grow_px

    @grow_px.setter
    def grow_px(self, value: int) -> None:
        self._set_setting("_grow_px", int(value))

    @property
    def feather_px(self) -> int:
        return self._feather_px

    @feather_px.setter
    def feather_px(self, value: int) -> None:
        self._set_setting("_feather_px", int(value))

    @_locked
    def photo_px(self, shown_px: int) -> int:
        """A size set on the photo as shown, in the working photo's own pixels."""
        if not self.has_image:
            return shown_px
        height, width = self.image.shape[:2]
        return round(shown_px / display_scale(width, height))

    @_locked
    def _set_setting(self, attribute: str, value: int) -> None:
        if getattr(self, attribute) != value:
            setattr(self, attribute, value)
            self._save()

    # --- the photos and their history ---------------------------------------------------------

    @property
    def has_image(self) -> bool:
        return self._history.working is not None

    @property
    @_locked
    def image(self) -> np.ndarray:
        """The working photo at full resolution, read-only: the same array object while it stays
        in memory (the segmenter remembers photos by identity)."""
        return self._full(self._working())

    @property
    @_locked
    def version(self) -> Version:
        return self._history.node(self._working()).version

    @property
    @_locked
    def versions(self) -> list[Version]:
        """Every version of every photo of this session, in creation order."""
        return self._history.versions()

    @property
    @_locked
    def previous(self) -> Version | None:
        """The working version's parent, for the before/after view."""
        if self._history.working is None:
            return None
        parent = self.version.parent
        return None if parent is None else self._history.node(parent).version

    @_locked
    def image_of(self, number: int) -> np.ndarray:
        """The full image of any version of this session, rebuilt from its ancestors when needed."""
        self._history.node(number)
        return self._full(number)

    @_locked
    def children(self, number: int) -> list[int]:
        """The versions made from `number` (more than one: a branch)."""
        self._history.node(number)
        return self._history.children(number)

    @property
    @_locked
    def photo_info(self) -> PhotoInfo:
        """The working photo's colour profile and metadata, as read from its file."""
        return self.info_of(self._working())

    @_locked
    def info_of(self, number: int) -> PhotoInfo:
        """The colour profile and metadata of the photo version `number` was made from."""
        return self._infos.get(self._history.root(number), PhotoInfo())

    @_locked
    def lineage(self, number: int | None = None) -> list[Version]:
        """The versions from the original to `number` (default: the working one), in order."""
        chain = [self._history.node(self._working() if number is None else number).version]
        while chain[-1].parent is not None:
            chain.append(self._history.node(chain[-1].parent).version)
        return chain[::-1]

    @_locked
    def open(self, image: np.ndarray, name: str = "photo", info: PhotoInfo | None = None) -> Version:
        """A new photo: a new original in the history; the other photos' versions stay. `info` (its
        profile and metadata) is saved beside it, for the display and the downloads."""
        version = self._attach(image, "original", {}, parent=None)
        self._names[version.number] = name
        if info is not None and info != PhotoInfo():
            self._save_info(version.number, info)
        self._drop_variations()
        self._reset_selection()
        self._save()
        return version

    @_locked
    def close(self) -> None:
        """No working photo (the page's canvas was cleared); its versions stay in the history, where
        picking one (`goto`) makes it the working photo again."""
        if self._history.working is not None:
            self._history.working = None
            self._reset_selection()
            self._save()

    @_locked
    def commit(self, image: np.ndarray, label: str, metadata: dict[str, str], base: int,
               area: np.ndarray | None = None) -> Version:
        """Add an edit's result as a child of version `base` (the version the edit started from, even
        if the working version moved since; a branch when `base` has children already). It becomes
        the working version. The selection is kept, so that another prompt or seed on the same area
        needs no new selection: `area` (the selection mask the edit used) stays selected as it was,
        since the objects its clicks found may be gone (erased) or changed (filled); without it, the
        clicks find their objects again on the new photo. It resets when the size changed (an
        outpaint, an upscale), where its clicks and strokes would no longer fit."""
        base_size = self._history.node(base).version.size
        version = self._attach(image, label, metadata, parent=base)
        self._keep_selection_if(base_size == version.size, area)
        self._save()
        return version

    def _keep_selection_if(self, same_size: bool, area: np.ndarray | None = None) -> None:
        if not same_size:
            self._reset_selection()
            return
        self._cache.drop_session(self.id, "mask")  # masks of the old photo
        if area is not None:
            self._selections = [Selection(brush_add=_none_if_empty(masks.binary(area)))]
            self._undone = []
        self._pin()

    @_locked
    def add_result(self, images: list[np.ndarray], metadata: dict[str, str], label: str, base: int,
                   area: np.ndarray | None = None) -> None:
        """Commit the first variation under `base` and keep all of them (on disk) for choosing;
        `area` is the selection the edit used (see `commit`)."""
        if not images:
            raise EditorError("the edit returned no image")
        version = self.commit(images[0], label, _variation_metadata(metadata, 0, len(images)), base, area)
        self._drop_variations()
        if len(images) > 1:
            self.variations = self._save_variations(images, metadata, label, version.number, base)
        self._pin()
        self._save()

    @_locked
    def choose_variation(self, chosen: int) -> None:
        """Let another variation of the last edit continue, in place of the one shown (beside it, as
        a branch, when later versions were made from the one shown)."""
        variations = self.variations
        if variations is None or not 0 <= chosen < variations.count:
            raise EditorError("there is no such variation")
        if self._history.working != variations.number:
            raise EditorError("the variations belong to an edit that is no longer the working photo")
        if chosen == variations.chosen:
            return
        box, size = variations.boxes[chosen], variations.sizes[chosen]
        pixels = None if box is None else self._folder.load_array(_variation_file(variations.key, chosen), 3)
        number = self._history.take_number()
        metadata = _variation_metadata(variations.metadata, chosen, variations.count)
        version = Version(number, variations.base, variations.label, metadata, variations.thumbnails[chosen], size)
        self._write_version(number, box, pixels, version.thumbnail)
        old = variations.number
        if self._history.children(old) or self.edits_pending:  # later versions, or an edit based on it
            self._history.add(version, box)
        else:
            self._history.replace(old, version, box)
            self._forget_version(old)
        self.variations = replace(variations, number=number, chosen=chosen)
        self._keep_selection_if(size == self._history.node(variations.base).version.size)
        self._pin()
        self._save()

    @property
    @_locked
    def can_undo(self) -> bool:
        return self._history.working is not None and self.version.parent is not None

    @property
    @_locked
    def can_redo(self) -> bool:
        working = self._history.working
        return working is not None and self._history.node(working).redo is not None

    @_locked
    def undo(self) -> None:
        """Go to the working version's parent."""
        if not self.can_undo:
            raise EditorError("nothing to undo: this is the original photo")
        self._move(self.version.parent)  # type: ignore[arg-type]

    @_locked
    def redo(self) -> None:
        """Go to the child last made or visited from the working version."""
        if not self.can_redo:
            raise EditorError("nothing to redo")
        self._move(self._history.node(self._working()).redo)  # type: ignore[arg-type]

    @_locked
    def goto(self, number: int) -> None:
        """Make version `number` (of any photo of this session) the working one."""
        self._history.node(number)
        self._move(number)

    # --- the selection ---------------------------------------------------------------------

    @property
    @_locked
    def selection(self) -> Selection:
        return self._selections[-1]

    @_locked
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
        self._box(*selection.pending_corner, x, y)

    @_locked
    def box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """A box dragged on the photo (any two opposite corners, full-resolution pixels) for the current object."""
        height, width = self.image.shape[:2]
        clamp = lambda value, size: min(max(value, 0.0), size - 1.0)  # noqa: E731
        self._box(clamp(x0, width), clamp(y0, height), clamp(x1, width), clamp(y1, height))

    def _box(self, x0: float, y0: float, x: float, y: float) -> None:
        if abs(x - x0) < 2 or abs(y - y0) < 2:
            raise SelectionError("the box is too thin: drag (or click two opposite corners) around the object")
        selection = self.selection
        prompts = selection.current.prompts.with_box((min(x0, x), min(y0, y), max(x0, x), max(y0, y)))
        self._push(replace(selection.with_current(replace(selection.current, prompts=prompts)), pending_corner=None))

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

    @_locked
    def select_by_name(self, query: str, detect: Detect) -> list[Detection]:
        """Add every object `detect` finds for `query` to the selection, one part (a box) each;
        clicks then go to a new object, or refine a detected one when inside its box."""
        detections = detect(self.image, query)
        selection = self.selection
        kept = tuple(part for part in selection.parts if not part.prompts.is_empty)
        parts = kept + detected_parts(detections) + (SelectionPart(),)
        self._push(replace(selection, parts=parts, pending_corner=None))
        return detections

    @_locked
    def new_part(self, subtract: bool) -> None:
        """Start another object that adds to (or is cut out of) the selection."""
        selection = self.selection
        if selection.current.prompts.is_empty:  # reuse an empty part, just flip its sign
            self._push(selection.with_current(SelectionPart(subtract=subtract)))
        else:
            self._push(replace(selection, parts=selection.parts + (SelectionPart(subtract=subtract),),
                               pending_corner=None))

    @_locked
    def invert(self) -> None:
        self._push(replace(self.selection, inverted=not self.selection.inverted))

    @_locked
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

    @property
    @_locked
    def ambiguous_prompts(self) -> Prompts | None:
        """The current object's prompts while they are one click (its candidate masks can be offered)."""
        if not self.has_image or self.selection.pending_corner is not None:
            return None
        prompts = self.selection.current.prompts
        return prompts if prompts.is_ambiguous else None

    @_locked
    def choose_candidate(self, candidate: int) -> bool:
        """Take another of the first click's candidate masks for the current object: a selection step
        (Ctrl+Z takes it back). False when it is the one taken already."""
        part = self.selection.current
        if not part.prompts.is_ambiguous:
            raise SelectionError("the other masks are offered for a first click alone: clear and click the object")
        if part.prompts.candidate == candidate:
            return False
        self._push(self.selection.with_current(replace(part, prompts=part.prompts.with_candidate(candidate))))
        return True

    @_locked
    def undo_click(self) -> None:
        """Take back the last selection step (a click, a box corner, a new part, invert, a brush)."""
        if len(self._selections) == 1:
            raise EditorError("no selection step to undo")
        self._undone.append(self._selections.pop())
        self._selection_changed()

    @property
    @_locked
    def can_undo_click(self) -> bool:
        return len(self._selections) > 1

    @property
    @_locked
    def can_redo_click(self) -> bool:
        return bool(self._undone)

    @_locked
    def redo_click(self) -> None:
        """Bring back the selection step `undo_click` took back last (until a new step is made)."""
        if not self._undone:
            raise EditorError("no selection step to redo")
        self._selections.append(self._undone.pop())
        self._selection_changed()

    @_locked
    def clear_selection(self) -> None:
        if not self.selection.is_empty:
            self._push(Selection())

    @_locked
    def selection_mask(self, segment: Segment) -> np.ndarray:
        """The selection as a binary mask, before grow: objects, inversion, then brush strokes.

        `segment` computes one object's mask; the last few are cached per prompts for this version.
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

    @_locked
    def edit_mask(self, segment: Segment) -> np.ndarray:
        """The mask an edit uses: the selection grown (or shrunk) by the grow slider."""
        return masks.grow(self.selection_mask(segment), self.photo_px(self.grow_px))

    @_locked
    def preview_mask(self, segment: Segment) -> np.ndarray:
        """What the page shows: grown, with the soft edge the paste-back will have."""
        return masks.refine(self.selection_mask(segment), self.photo_px(self.grow_px), self.photo_px(self.feather_px))

    # --- a running edit ------------------------------------------------------------------------

    @_locked
    def begin_edit(self) -> int:
        """Count an edit as waiting or running; the working version's number, which is the edit's base
        (pass it to `commit` / `add_result`, so that the result lands there whatever happens meanwhile)."""
        base = self._working()
        self.edits_pending += 1
        self.last_used = time.time()
        return base

    @_locked
    def end_edit(self) -> None:
        self.edits_pending = max(0, self.edits_pending - 1)
        if self.edits_pending == 0 and self.cancel.is_set():
            # a fresh flag: an edit the page stopped waiting for may still be in its last step,
            # holding the old one (set), so it stops there instead of going on
            self.cancel = threading.Event()

    @property
    def edit_running(self) -> bool:
        return self.edits_pending > 0

    @_locked
    def request_cancel(self) -> bool:
        """Ask the running (or queued) edits to stop; False when there is none."""
        if self.edits_pending == 0:
            return False
        self.cancel.set()
        return True

    # --- pixels: written once, rebuilt on demand, cached within the shared budget ----------------

    def _working(self) -> int:
        if self._history.working is None:
            raise EditorError("upload a photo first")
        return self._history.working

    def _attach(self, image: np.ndarray, label: str, metadata: dict[str, str], parent: int | None) -> Version:
        """Save a new version (what it changed over `parent`, or all of it for an original), then
        add it to the tree as the working version, its image cached."""
        photo = history.frozen(np.array(_checked_image(image), order="C", copy=True))
        height, width = photo.shape[:2]
        whole: Box = (0, 0, width, height)
        box = whole if parent is None else history.changed_box(self._full(parent), photo)
        pixels = photo if box == whole else history.crop(photo, box)
        number = self._history.take_number()
        version = Version(number, parent, label, dict(metadata), history.thumbnail(photo), (width, height))
        self._write_version(number, box, pixels, version.thumbnail)
        self._history.add(version, box)
        if pixels is not None and box != whole:
            self._cache.put(self._key("delta", number), history.frozen(pixels))
        self._cache_full(number, photo)
        self._pin()
        return version

    def _write_version(self, number: int, box: Box | None, pixels: np.ndarray | None,
                       thumbnail: np.ndarray) -> None:
        if box is not None:
            self._folder.save_array(f"v{number}.npy", pixels)  # type: ignore[arg-type]
        self._folder.save_array(f"t{number}.npy", thumbnail)

    def _forget_version(self, number: int) -> None:
        self._folder.remove(f"v{number}.npy", f"t{number}.npy")
        self._cache.drop(self._key("full", number))
        self._cache.drop(self._key("delta", number))

    def _full(self, number: int) -> np.ndarray:
        image = self._cache.get(self._key("full", number))
        if image is None:
            image = self._cache_full(number, self._rebuild(number))
        return image

    def _rebuild(self, number: int) -> np.ndarray:
        """Start from the nearest ancestor in memory (or the nearest one saved whole), then paint each
        version's changes on the way down to `number`."""
        chain = [number]
        start = None
        while not self._history.node(chain[-1]).is_full:
            parent = self._history.node(chain[-1]).version.parent
            assert parent is not None  # an original is always saved whole
            start = self._cache.get(self._key("full", parent))
            if start is not None:
                break
            chain.append(parent)
        if start is None:
            start = self._load_whole(chain.pop())
            if not chain:
                return start
        image = start.copy()
        for step in reversed(chain):
            node = self._history.node(step)
            history.apply(image, node.box, self._delta(step))
        return history.frozen(image)

    def _load_whole(self, number: int) -> np.ndarray:
        width, height = self._history.node(number).version.size
        image = self._folder.load_array(f"v{number}.npy", 3)
        if image.shape != (height, width, 3):
            raise DamagedSession(f"the saved history of this session is damaged (version {number})")
        return self._cache_full(number, image)

    def _delta(self, number: int) -> np.ndarray | None:
        if self._history.node(number).box is None:
            return None
        key = self._key("delta", number)
        pixels = self._cache.get(key)
        if pixels is None:
            pixels = self._cache.put(key, self._folder.load_array(f"v{number}.npy", 3))
        return pixels

    def _cache_full(self, number: int, image: np.ndarray) -> np.ndarray:
        """Cache a rebuilt image; past FULL_IMAGES_PER_SESSION, drop this session's least recently
        used one that is not the working version's."""
        self._cache.put(self._key("full", number), image)
        keep = {number, self._history.working}
        cached = self._cache.keys(self.id, "full")
        for key in [k for k in cached if k[2] not in keep][: max(0, len(cached) - FULL_IMAGES_PER_SESSION)]:
            self._cache.drop(key)
        return image

    def _segment(self, segment: Segment, prompts: Prompts) -> np.ndarray:
        key = self._key("mask", (self._working(), prompts))
        mask = self._cache.get(key)
        if mask is None:
            mask = self._cache.put(key, history.frozen(masks.binary(segment(self.image, prompts))))
            for old in self._cache.keys(self.id, "mask")[:-MASKS_PER_SESSION]:
                self._cache.drop(old)
        return mask

    def _key(self, kind: str, which: Any) -> tuple[str, str, Any]:
        return (self.id, kind, which)

    def _pin(self) -> None:
        """Tell the shared budget what this session holds outside its cache."""
        thumbnails = sum(v.thumbnail.nbytes for v in self._history.versions())
        if self.variations is not None:
            thumbnails += sum(t.nbytes for t in self.variations.thumbnails)
        brushes = {id(a): a.nbytes for s in self._selections for a in (s.brush_add, s.brush_remove) if a is not None}
        self._cache.pin(self.id, "thumbnails", thumbnails)
        self._cache.pin(self.id, "brushes", sum(brushes.values()))

    # --- variations ------------------------------------------------------------------------------

    def _save_variations(self, images: list[np.ndarray], metadata: dict[str, str], label: str, number: int,
                         base: int) -> Variations:
        """Each variation as its change over the base, in the folder; only thumbnails stay in memory."""
        base_image = self._full(base)
        thumbnails, boxes, sizes = [], [], []
        for index, image in enumerate(images):
            image = _checked_image(image)
            height, width = image.shape[:2]
            box = history.changed_box(base_image, image)
            if box is not None:
                self._folder.save_array(_variation_file(number, index), history.crop(image, box))
            thumbnails.append(history.thumbnail(image))
            self._folder.save_array(_variation_thumbnail(number, index), thumbnails[-1])
            boxes.append(box)
            sizes.append((width, height))
        return Variations(number, base, label, dict(metadata), tuple(thumbnails), tuple(boxes), tuple(sizes), number)

    def _drop_variations(self) -> None:
        variations, self.variations = self.variations, None
        if variations is not None:
            for index in range(variations.count):
                self._folder.remove(_variation_file(variations.key, index), _variation_thumbnail(variations.key, index))

    # --- the selection's bookkeeping -----------------------------------------------------------

    def _move(self, number: int) -> None:
        if number != self._history.working:
            self._history.visit(number)
            self._reset_selection()
            self._save()

    def _reset_selection(self) -> None:
        self._selections = [Selection()]
        self._undone = []
        self._cache.drop_session(self.id, "mask")
        self._pin()

    def _push(self, selection: Selection) -> None:
        self._selections.append(selection)
        self._undone = []  # a new step ends what redo could bring back
        self._selection_changed()

    def _selection_changed(self) -> None:
        self._pin()
        self._save()

    # --- the folder --------------------------------------------------------------------------------

    def _save(self) -> None:
        """Write the index: the tree, the names, the settings, the selection and the variations."""
        selection = self._selection_to_json()
        self._folder.save_index({
            "history": self._history.to_json(),
            "names": {str(number): name for number, name in self._names.items()},
            "photos": {str(number): _info_to_json(number, info) for number, info in self._infos.items()},
            "grow_px": self._grow_px,
            "feather_px": self._feather_px,
            "selection": selection,
            "variations": None if self.variations is None else _variations_to_json(self.variations),
        })
        self._remove_unreferenced_brushes()
        self.last_used = time.time()

    def _selection_to_json(self) -> dict[str, Any]:
        selection = self.selection
        data: dict[str, Any] = {
            "parts": [part_to_json(part) for part in selection.parts],
            "pending_corner": None if selection.pending_corner is None else list(selection.pending_corner),
            "inverted": selection.inverted,
        }
        for which, array in (("add", selection.brush_add), ("remove", selection.brush_remove)):
            data[f"brush_{which}"] = None if array is None else self._brush_file(which, array)
        return data

    def _brush_file(self, which: str, array: np.ndarray) -> str:
        """The file of a brush mask, written the first time this mask is saved."""
        saved = self._brush_files.get(which)
        if saved is not None and saved[0] is array:
            return saved[1]
        self._brush_count += 1
        name = f"brush{self._brush_count}-{which}.npy"
        self._folder.save_array(name, masks.binary(array))
        self._brush_files[which] = (array, name)
        return name

    def _remove_unreferenced_brushes(self) -> None:
        if not self._brush_count:
            return  # never painted: nothing to look for
        selection = self.selection
        current = {which: array for which, array in (("add", selection.brush_add), ("remove", selection.brush_remove))
                   if array is not None}
        self._brush_files = {w: saved for w, saved in self._brush_files.items() if current.get(w) is saved[0]}
        kept = {name for _, name in self._brush_files.values()}
        self._folder.remove(*(name for name in self._folder.arrays() if name.startswith("brush") and name not in kept))

    @classmethod
    def restore(cls, session_id: str, folder: SessionFolder, cache: PixelCache) -> Session:
        """The session saved in `folder`; DamagedSession when it cannot be read back whole."""
        data = folder.load_index()
        session = cls(session_id, folder, cache)
        try:
            session._load(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            cache.drop_session(session_id)
            raise DamagedSession(f"the session index of {session_id} is malformed ({exc!r})") from None
        folder.remove_temporaries()
        folder.remove(*(folder.arrays() - session._referenced_arrays()))  # written just before a crash
        session._pin()
        return session

    def _referenced_arrays(self) -> set[str]:
        names = {f"t{v.number}.npy" for v in self._history.versions()}
        names |= {f"v{v.number}.npy" for v in self._history.versions() if self._history.node(v.number).box}
        names |= {name for _, name in self._brush_files.values()}
        if self.variations is not None:
            for index, box in enumerate(self.variations.boxes):
                names.add(_variation_thumbnail(self.variations.key, index))
                if box is not None:
                    names.add(_variation_file(self.variations.key, index))
        return names

    def _load(self, data: dict[str, Any]) -> None:
        items = data["history"]["versions"]
        thumbnails = {int(item["number"]): self._folder.load_array(f"t{int(item['number'])}.npy", 3)
                      for item in items}
        self._history = History.from_json(data["history"], thumbnails)
        for version in self._history.versions():
            if self._history.node(version.number).box is not None and not (
                    self._folder.path / f"v{version.number}.npy").is_file():
                raise ValueError(f"the pixels of version {version.number} are missing")
        self._names = {int(number): str(name) for number, name in data["names"].items()}
        self._infos = {int(number): self._info_from_json(item) for number, item in data.get("photos", {}).items()}
        self._grow_px, self._feather_px = int(data["grow_px"]), int(data["feather_px"])
        self._selections = [self._selection_from_json(data["selection"])]
        self.variations = None if data["variations"] is None else self._variations_from_json(data["variations"])

    def _save_info(self, number: int, info: PhotoInfo) -> None:
        """Write a photo's profile, EXIF and XMP once, as files beside its pixels (bytes, and kept out
        of the index, which is rewritten at every click)."""
        for kind, data in (("icc", info.icc_profile), ("exif", info.exif), ("xmp", info.xmp)):
            if data:
                self._folder.save_bytes(f"{kind}{number}.bin", data)
        self._infos[number] = info

    def _info_from_json(self, item: dict[str, Any]) -> PhotoInfo:
        blobs = {kind: None if item[kind] is None else self._folder.load_bytes(str(item[kind]))
                 for kind in ("icc", "exif", "xmp")}
        dpi = item["dpi"]
        return PhotoInfo(blobs["icc"], blobs["exif"], blobs["xmp"],
                         None if dpi is None else (float(dpi[0]), float(dpi[1])))

    def _selection_from_json(self, data: dict[str, Any]) -> Selection:
        parts = tuple(part_from_json(part) for part in data["parts"])
        if not parts:
            raise ValueError("a selection has at least one part")
        corner = data["pending_corner"]
        if not isinstance(data["inverted"], bool):
            raise ValueError("the selection's inverted flag is malformed")
        brushes: dict[str, np.ndarray | None] = {}
        for which in ("add", "remove"):
            name = data[f"brush_{which}"]
            brushes[which] = None if name is None else self._load_brush(which, str(name))
        return Selection(parts, None if corner is None else (float(corner[0]), float(corner[1])), data["inverted"],
                         brushes["add"], brushes["remove"])

    def _load_brush(self, which: str, name: str) -> np.ndarray:
        array = self._folder.load_array(name, 2)
        width, height = self.version.size
        if array.shape != (height, width):
            raise ValueError(f"the brush mask {name} does not fit the photo")
        self._brush_files[which] = (array, name)
        self._brush_count = max(self._brush_count, int(name[len("brush"):].split("-")[0]))
        return array

    def _variations_from_json(self, data: dict[str, Any]) -> Variations:
        key, count = int(data["key"]), len(data["boxes"])
        sizes = tuple((int(w), int(h)) for w, h in data["sizes"])
        boxes = tuple(None if box is None else history.checked_box(box, *size) for box, size in zip(data["boxes"], sizes))
        if count < 2 or len(sizes) != count or not 0 <= int(data["chosen"]) < count:
            raise ValueError("the variations are malformed")
        for index, box in enumerate(boxes):
            if box is not None and not (self._folder.path / _variation_file(key, index)).is_file():
                raise ValueError(f"variation {index + 1} is missing")
        thumbnails = tuple(self._folder.load_array(_variation_thumbnail(key, i), 3) for i in range(count))
        number, base = int(data["number"]), int(data["base"])
        self._history.node(number), self._history.node(base)
        metadata = {str(k): str(v) for k, v in data["metadata"].items()}
        return Variations(number, base, str(data["label"]), metadata, thumbnails, boxes, sizes, key, int(data["chosen"]))


def _info_to_json(number: int, info: PhotoInfo) -> dict[str, Any]:
    files = {kind: f"{kind}{number}.bin" if data else None
             for kind, data in (("icc", info.icc_profile), ("exif", info.exif), ("xmp", info.xmp))}
    return {**files, "dpi": None if info.dpi is None else list(info.dpi)}


def _variations_to_json(variations: Variations) -> dict[str, Any]:
    return {"number": variations.number, "base": variations.base, "label": variations.label,
            "metadata": variations.metadata, "key": variations.key, "chosen": variations.chosen,
            "boxes": [None if box is None else list(box) for box in variations.boxes],
            "sizes": [list(size) for size in variations.sizes]}


def _variation_file(key: int, index: int) -> str:
    return f"var{key}-{index}.npy"


def _variation_thumbnail(key: int, index: int) -> str:
    return f"vart{key}-{index}.npy"


def _has_anchor(prompts: Prompts) -> bool:
    """A positive point or a box: what SAM needs to know which object is meant."""
    return prompts.box is not None or 1 in prompts.labels


def _checked_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise EditorError(f"a version must be an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    return image


def _zeros(shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros(shape[:2], np.uint8)


def _none_if_empty(mask: np.ndarray) -> np.ndarray | None:
    return mask if np.any(mask) else None


def _variation_metadata(metadata: dict[str, str], chosen: int, count: int) -> dict[str, str]:
    if count == 1:
        return dict(metadata)
    return {**metadata, "variation": f"{chosen + 1} of {count}"}
