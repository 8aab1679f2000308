"""Selection prompts: what a person clicked or a detector found, in original-image pixel coordinates."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from editor.core.errors import SelectionError

Point = tuple[float, float]
CANDIDATES = 3  # the masks SAM's decoder gives for an ambiguous click
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Prompts:
    """Positive and negative points, in click order, plus an optional box (x1, y1, x2, y2).

    A first click alone is ambiguous (a part, the object, a group): the segmenter offers CANDIDATES
    masks for it and takes the best-scoring one, or the one `candidate` names; the clicks after it
    refine the one taken.
    """

    points: tuple[Point, ...] = ()
    labels: tuple[int, ...] = ()  # 1 = positive (object), 0 = negative (not the object)
    box: Box | None = None
    candidate: int | None = None  # which mask of the first click (0..CANDIDATES-1), None = the best

    def add_point(self, x: float, y: float, positive: bool = True) -> Prompts:
        return replace(self, points=self.points + ((x, y),), labels=self.labels + (int(positive),))

    def with_box(self, box: Box | None) -> Prompts:
        return replace(self, box=box)

    def with_candidate(self, candidate: int | None) -> Prompts:
        return replace(self, candidate=candidate)

    @property
    def is_ambiguous(self) -> bool:
        """One point and no box: the click whose candidate masks are offered."""
        return len(self.points) == 1 and self.box is None

    @property
    def is_empty(self) -> bool:
        return not self.points and self.box is None

    @property
    def count(self) -> int:
        """Points and boxes: what a selection's cost grows with."""
        return len(self.points) + (self.box is not None)

    def validated(self, width: int, height: int, max_prompts: int | None = None) -> Prompts:
        """Check the prompts fit a `width`x`height` image and, given `max_prompts`, that there are not
        more points and boxes than that; corners of the box are put in order."""
        if max_prompts is not None:
            check_prompt_count(self.count, max_prompts)
        if len(self.points) != len(self.labels):
            raise SelectionError("every point needs a label (positive or negative)")
        if any(label not in (0, 1) for label in self.labels):
            raise SelectionError("a point's label must be 1 (object) or 0 (not the object)")
        for x, y in self.points:
            if not (0 <= x < width and 0 <= y < height):
                raise SelectionError(f"point ({x:g}, {y:g}) is outside the {width}x{height} image")
        box = self.box
        if box is not None:
            x1, x2 = sorted((box[0], box[2]))
            y1, y2 = sorted((box[1], box[3]))
            if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                raise SelectionError(f"box {box} is outside the {width}x{height} image")
            if x2 - x1 < 1 or y2 - y1 < 1:
                raise SelectionError("the box is empty: drag a larger rectangle")
            box = (x1, y1, x2, y2)
        if box is None and 1 not in self.labels:
            raise SelectionError("add at least one positive point or a box to select something")
        if self.candidate is not None and self.candidate not in range(CANDIDATES):
            raise SelectionError(f"a candidate mask is 1 to {CANDIDATES}, got {self.candidate + 1}")
        return Prompts(self.points, self.labels, box, self.candidate)


def check_prompt_count(count: int, max_prompts: int) -> None:
    if count > max_prompts:
        raise SelectionError(f"{count} points and boxes in one selection; at most {max_prompts} (limits.points)")


@dataclass(frozen=True)
class SelectionPart:
    """One object of a selection: its prompts and whether it adds to or subtracts from the rest."""

    prompts: Prompts = field(default_factory=Prompts)
    subtract: bool = False
    label: str = ""  # what the detector named it ("dog 0.62"); empty for a clicked object


@dataclass(frozen=True)
class Detection:
    """One object a detector found for a text query."""

    box: Box  # x1, y1, x2, y2 in the photo's pixels, inside the photo
    label: str  # which of the queries it is
    score: float  # 0..1


def detected_parts(detections: list[Detection]) -> tuple[SelectionPart, ...]:
    """One selection part per detection: its box as the prompt, its label and score as the name."""
    return tuple(SelectionPart(Prompts(box=d.box), label=f"{d.label} {d.score:.2f}") for d in detections)


def route_point(parts: tuple[SelectionPart, ...], x: float, y: float) -> int | None:
    """The index of the detected part whose box holds (x, y), the smallest if boxes nest; None if none does."""
    inside = [(_area(part.prompts.box), index) for index, part in enumerate(parts)
              if part.label and part.prompts.box is not None and _holds(part.prompts.box, x, y)]
    return min(inside)[1] if inside else None


def refine_detected(parts: tuple[SelectionPart, ...], refine: Prompts) -> tuple[SelectionPart, ...]:
    """Add click prompts to detected objects: a point inside a detected box refines that object (SAM
    takes the box and the points together); the other points and a box select one more object that
    joins the selection."""
    routed = list(parts)
    extra = Prompts(box=refine.box)
    for (x, y), label in zip(refine.points, refine.labels):
        index = route_point(parts, x, y)
        if index is None:
            extra = extra.add_point(x, y, bool(label))
        else:
            routed[index] = replace(routed[index], prompts=routed[index].prompts.add_point(x, y, bool(label)))
    if extra.points and extra.box is None and 1 not in extra.labels:
        x, y = extra.points[0]
        raise SelectionError(f"the not-object point ({x:g}, {y:g}) is outside every detected box: it changes nothing")
    return tuple(routed) + (() if extra.is_empty else (SelectionPart(extra),))


def _holds(box: Box, x: float, y: float) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def _area(box: Box | None) -> float:
    return 0.0 if box is None else (box[2] - box[0]) * (box[3] - box[1])


def parse_point(text: str) -> Point:
    """'X,Y' from the command line."""
    values = _parse_numbers(text, 2, "point", "X,Y")
    return values[0], values[1]


def parse_box(text: str) -> Box:
    """'X1,Y1,X2,Y2' from the command line."""
    values = _parse_numbers(text, 4, "box", "X1,Y1,X2,Y2")
    return values[0], values[1], values[2], values[3]


def _parse_numbers(text: str, count: int, what: str, form: str) -> list[float]:
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count or any(v != v for v in values):
        raise SelectionError(f"{what} must be {form} in pixels, got {text!r}")
    return values


# --- saving a selection (a session's folder) -----------------------------------------------------


def part_to_json(part: SelectionPart) -> dict[str, Any]:
    prompts = part.prompts
    return {"points": [list(p) for p in prompts.points], "labels": list(prompts.labels),
            "box": None if prompts.box is None else list(prompts.box), "candidate": prompts.candidate,
            "subtract": part.subtract, "label": part.label}


def part_from_json(data: dict[str, Any]) -> SelectionPart:
    """The part saved by `part_to_json`; a malformed one raises ValueError, KeyError or TypeError."""
    points = tuple((float(x), float(y)) for x, y in data["points"])
    labels = tuple(int(v) for v in data["labels"])
    if len(points) != len(labels) or any(v not in (0, 1) for v in labels):
        raise ValueError("every point needs a label 0 or 1")
    box = data["box"]
    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in box)
        box = (x1, y1, x2, y2)
    if not isinstance(data["subtract"], bool) or not isinstance(data["label"], str):
        raise ValueError("a part's subtract flag or label is malformed")
    candidate = data.get("candidate")  # absent from sessions saved before candidates were offered
    if candidate is not None and int(candidate) not in range(CANDIDATES):
        raise ValueError("a part's candidate mask is malformed")
    candidate = None if candidate is None else int(candidate)
    return SelectionPart(Prompts(points, labels, box, candidate), data["subtract"], data["label"])


MAX_QUERY_CHARS = 200  # characters of a select-by-name query


def parse_query(text: str) -> list[str]:
    """'The dog, a Person.' -> ['the dog', 'a person']: phrases split at commas, periods and semicolons."""
    if len(text) > MAX_QUERY_CHARS:
        raise SelectionError(f"the query is too long: at most {MAX_QUERY_CHARS} characters")
    phrases = [" ".join(part.split()).lower() for part in re.split(r"[,.;\n]", text)]
    queries = list(dict.fromkeys(p for p in phrases if p))  # drop repeats, keep the order
    if not queries:
        raise SelectionError("type what to select, e.g. 'dog' or 'person, bicycle'")
    return queries
