"""The version tree of a session and what each version changed. Pure data and numpy: no disk, no locks.

A version stores only the box of pixels that differ from its parent and the new pixels in that box;
a root (a newly opened photo), or a version whose size differs from its parent's, stores its whole
image. Editing an earlier version adds a child beside the later ones (a branch): nothing is dropped.
Images are `HxWx3 uint8`; a box is `(x0, y0, x1, y1)` in pixels, end exclusive.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from editor.core.errors import EditorError

Box = tuple[int, int, int, int]
THUMB_SIDE = 160  # the longest side of a version's thumbnail
_ROWS_PER_CHUNK = 256  # rows compared at once: bounds the temporary arrays of a diff on a big photo


@dataclass(frozen=True)
class Version:
    """One state of one photo of the session."""

    number: int  # unique within the session, in creation order; names the download file
    parent: int | None  # None for the original of a photo
    label: str  # "original", "erase", "fill: a red hat"
    metadata: dict[str, str]
    thumbnail: np.ndarray  # max side THUMB_SIDE, HxWx3 uint8, read-only
    size: tuple[int, int]  # (width, height)


@dataclass
class Node:
    """A version in the tree, with what it changed over its parent and where Redo goes from it."""

    version: Version
    box: Box | None  # the changed pixels; None: the same pixels as the parent; the whole image: a full node
    redo: int | None = None  # the child last made or visited from here

    @property
    def is_full(self) -> bool:
        """The stored pixels are the whole image: no parent is needed to rebuild it."""
        return self.box == (0, 0, *self.version.size)


class History:
    """Every version of every photo of one session, as a tree, and the working version."""

    def __init__(self) -> None:
        self._nodes: dict[int, Node] = {}  # in creation order (the history strip's order)
        self.working: int | None = None
        self.next_number = 1

    def __contains__(self, number: object) -> bool:
        return number in self._nodes

    def node(self, number: int) -> Node:
        if number not in self._nodes:
            raise EditorError(f"there is no version {number}")
        return self._nodes[number]

    def versions(self) -> list[Version]:
        return [node.version for node in self._nodes.values()]

    def children(self, number: int) -> list[int]:
        return [n for n, node in self._nodes.items() if node.version.parent == number]

    def take_number(self) -> int:
        number = self.next_number
        self.next_number += 1
        return number

    def add(self, version: Version, box: Box | None) -> None:
        """Attach `version` under its parent (a new root when it has none); it becomes the working one."""
        if version.parent is not None:
            self.node(version.parent)
        self._nodes[version.number] = Node(version, box)
        self.visit(version.number)

    def replace(self, old: int, version: Version, box: Box | None) -> None:
        """Put `version` in the place of `old` (a leaf, same parent), keeping its place in the strip."""
        if self.children(old):
            raise EditorError(f"version {old} has later versions: it cannot be replaced")
        self._nodes = {(version.number if n == old else n): (Node(version, box) if n == old else node)
                       for n, node in self._nodes.items()}
        for node in self._nodes.values():
            if node.redo == old:
                node.redo = version.number
        if self.working == old:
            self.working = version.number

    def visit(self, number: int) -> None:
        """Make `number` the working version; Redo from each ancestor now leads back here."""
        self.node(number)
        self.working = number
        child = number
        for ancestor in self.ancestors(number):
            self._nodes[ancestor].redo = child
            child = ancestor

    def ancestors(self, number: int) -> list[int]:
        """The parent, the grandparent, ... up to the photo's original."""
        chain, parent = [], self.node(number).version.parent
        while parent is not None:
            chain.append(parent)
            parent = self._nodes[parent].version.parent
        return chain

    def root(self, number: int) -> int:
        chain = self.ancestors(number)
        return chain[-1] if chain else number

    def to_json(self) -> dict[str, Any]:
        return {
            "working": self.working,
            "next_number": self.next_number,
            "versions": [_node_to_json(node) for node in self._nodes.values()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], thumbnails: dict[int, np.ndarray]) -> History:
        """The tree saved by `to_json`; a malformed one raises ValueError (or KeyError, TypeError)."""
        history = cls()
        for item in data["versions"]:
            node = _node_from_json(item, thumbnails[int(item["number"])])
            number, parent = node.version.number, node.version.parent
            if number in history._nodes or (parent is not None and parent not in history._nodes):
                raise ValueError(f"version {number} is a duplicate or comes before its parent")
            history._nodes[number] = node
        for node in history._nodes.values():
            if node.redo is not None and history._nodes.get(node.redo, node).version.parent != node.version.number:
                raise ValueError(f"version {node.version.number} redoes to a version that is not its child")
        working, next_number = data["working"], int(data["next_number"])
        if working is not None and working not in history._nodes:  # None: no photo on the canvas (cleared)
            raise ValueError("the working version is not in the history")
        if history._nodes and next_number <= max(history._nodes):
            raise ValueError("the next version number is already taken")
        history.working, history.next_number = working, next_number
        return history


def _node_to_json(node: Node) -> dict[str, Any]:
    version = node.version
    return {"number": version.number, "parent": version.parent, "label": version.label,
            "metadata": version.metadata, "size": list(version.size),
            "box": None if node.box is None else list(node.box), "redo": node.redo}


def _node_from_json(item: dict[str, Any], thumbnail: np.ndarray) -> Node:
    number, parent, redo = int(item["number"]), item["parent"], item["redo"]
    width, height = (int(v) for v in item["size"])
    metadata = item["metadata"]
    if not isinstance(item["label"], str) or not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"version {number} has a malformed label or metadata")
    box = None if item["box"] is None else checked_box(item["box"], width, height)
    if parent is None and box != (0, 0, width, height):
        raise ValueError(f"version {number} is an original without its whole image")
    version = Version(number, None if parent is None else int(parent), item["label"], dict(metadata), thumbnail,
                      (width, height))
    return Node(version, box, None if redo is None else int(redo))


def checked_box(values: list[Any], width: int, height: int) -> Box:
    x0, y0, x1, y1 = (int(v) for v in values)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {values} is outside a {width}x{height} image")
    return x0, y0, x1, y1


# --- what a version changed ---------------------------------------------------------------------


def changed_box(old: np.ndarray, new: np.ndarray) -> Box | None:
    """The smallest box holding every pixel that differs; the whole of `new` when the sizes differ;
    None when nothing changed. Compares 8 bytes at a time, in bands of rows, so that a 24 MP photo
    needs no photo-sized temporary."""
    height, width = new.shape[:2]
    if old.shape != new.shape:
        return 0, 0, width, height
    old, new = np.ascontiguousarray(old), np.ascontiguousarray(new)
    rows = np.flatnonzero(_changed_rows(old.reshape(height, -1), new.reshape(height, -1)))
    if rows.size == 0:
        return None
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    columns = np.zeros(width, bool)
    for start in range(y0, y1, _ROWS_PER_CHUNK):
        stop = min(start + _ROWS_PER_CHUNK, y1)
        columns |= np.any(old[start:stop] != new[start:stop], axis=(0, 2))
    xs = np.flatnonzero(columns)
    return int(xs[0]), y0, int(xs[-1]) + 1, y1


def _changed_rows(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """One bool per row of two `H x bytes` arrays: does the row differ anywhere."""
    if old.shape[1] % 8 == 0:
        old, new = old.view(np.uint64), new.view(np.uint64)
    rows = np.empty(old.shape[0], bool)
    for start in range(0, old.shape[0], _ROWS_PER_CHUNK):
        stop = start + _ROWS_PER_CHUNK
        np.any(old[start:stop] != new[start:stop], axis=1, out=rows[start:stop])
    return rows


def crop(image: np.ndarray, box: Box | None) -> np.ndarray | None:
    """The pixels of `image` in `box`, as an array of their own (None for no box)."""
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return np.array(image[y0:y1, x0:x1], order="C", copy=True)


def apply(image: np.ndarray, box: Box | None, pixels: np.ndarray | None) -> None:
    """Paint a version's changed pixels onto (a writable copy of) its parent's image."""
    if box is None:
        return
    x0, y0, x1, y1 = box
    if pixels is None or pixels.shape != (y1 - y0, x1 - x0, 3) or image.shape[0] < y1 or image.shape[1] < x1:
        raise EditorError("the saved history of this session is damaged (a version does not fit its parent)")
    image[y0:y1, x0:x1] = pixels


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The strip's picture of a version: longest side THUMB_SIDE (area-averaged), read-only."""
    height, width = image.shape[:2]
    scale = min(1.0, THUMB_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = image.copy() if scale == 1.0 else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return frozen(small)


def frozen(array: np.ndarray) -> np.ndarray:
    """`array` made read-only (in place): a stored version never changes, so caches keyed on it stay right."""
    array.flags.writeable = False
    return array
