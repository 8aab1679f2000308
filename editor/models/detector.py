"""Finding objects by name: an open-vocabulary detector turns "dog, person" into scored boxes.

Grounding DINO (the default) or OWLv2 from transformers, whichever the model folder holds; the
model loads once, on first use, and is shared by every session, one call at a time. A failed
load is remembered, and "select by name" then says why. Boxes come back in the original
photo's pixels, whatever size the model worked at.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from editor.core.errors import EditorError
from editor.models.loading import LoadOnce
from editor.core.prompts import Box, Detection

if TYPE_CHECKING:
    from editor.models.registry import LoadContext, ModelEntry

# Model types that read one sentence of dot-separated phrases ("dog. person."); the others
# (OWL-ViT, OWLv2) take a list of queries.
SENTENCE_MODELS = frozenset({"grounding-dino", "mm-grounding-dino"})


@dataclass(frozen=True)
class Thresholds:
    box: float  # keep boxes scoring above this
    text: float  # Grounding DINO: words scoring above this name the box
    max_detections: int


class TransformersDetector:
    """`AutoModelForZeroShotObjectDetection` + `AutoProcessor` from a local folder, loaded lazily."""

    def __init__(self, path: Path, device: str, thresholds: Thresholds, description: str) -> None:
        self.path = path
        self.device = device
        self.thresholds = thresholds
        self.description = description
        self._slot: LoadOnce[tuple[Any, Any]] = LoadOnce(f"the detector {path.name}", self._load)
        self._lock = threading.Lock()  # one inference at a time: the model is shared by every session

    def detect(self, image: np.ndarray, queries: list[str]) -> list[Detection]:
        from PIL import Image

        height, width = image.shape[:2]
        processor, model = self.load()
        with self._lock, torch.inference_mode():
            sentence = model.config.model_type in SENTENCE_MODELS
            text: Any = " ".join(f"{q}." for q in queries) if sentence else [queries]
            inputs = processor(images=Image.fromarray(image), text=text, return_tensors="pt").to(model.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            outputs = model(**inputs)
            found = post_process(processor, outputs, inputs["input_ids"], queries, (height, width),
                                 self.thresholds, sentence)
        return found

    @property
    def loaded(self) -> bool:
        return self._slot.loaded

    @property
    def load_error(self) -> str | None:
        """Why the detector failed to load (one line, remembered), or None."""
        return self._slot.error

    def load(self) -> tuple[Any, Any]:
        """The processor and the model, loaded on first use; ModelLoadError if that failed (tried once)."""
        return self._slot.get()

    def _load(self) -> tuple[Any, Any]:
        """fp16 on CUDA, fp32 on the CPU."""
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        dtype = torch.float16 if self.device == "cuda" else torch.float32
        processor = AutoProcessor.from_pretrained(self.path)
        model = AutoModelForZeroShotObjectDetection.from_pretrained(self.path, dtype=dtype)
        return processor, model.to(self.device).eval()


def post_process(processor: Any, outputs: Any, input_ids: torch.Tensor, queries: list[str], size: tuple[int, int],
                 thresholds: Thresholds, sentence: bool) -> list[Detection]:
    """The model's outputs as detections in the photo's pixels (`size` is (height, width)), best first."""
    if sentence:
        result = processor.post_process_grounded_object_detection(
            outputs, input_ids, threshold=thresholds.box, text_threshold=thresholds.text, target_sizes=[size])[0]
    else:  # OWLv2 pads the photo to a square; its post-processing scales back to (height, width)
        result = processor.post_process_grounded_object_detection(
            outputs, threshold=thresholds.box, target_sizes=[size], text_labels=[queries])[0]
    boxes = result["boxes"].float().cpu().numpy().reshape(-1, 4)
    scores = result["scores"].float().cpu().numpy().reshape(-1)
    labels = [_query_for(str(label), queries) for label in result["text_labels"]]
    found = []
    for index in np.argsort(-scores, kind="stable"):
        box = clip_box(boxes[index], size)
        if box is not None:
            found.append(Detection(box, labels[index], float(scores[index])))
    return suppress_duplicates(found)[: thresholds.max_detections]


def clip_box(box: np.ndarray, size: tuple[int, int]) -> Box | None:
    """The box cut to the photo; None when less than a pixel of it is inside."""
    height, width = size
    x1, x2 = np.clip(sorted((float(box[0]), float(box[2]))), 0, width)
    y1, y2 = np.clip(sorted((float(box[1]), float(box[3]))), 0, height)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return float(x1), float(y1), float(x2), float(y2)


def suppress_duplicates(detections: list[Detection], iou: float = 0.8) -> list[Detection]:
    """Drop a box that nearly repeats a better one of the same label (detectors often find one object twice)."""
    kept: list[Detection] = []
    for candidate in detections:
        if all(d.label != candidate.label or box_iou(d.box, candidate.box) < iou for d in kept):
            kept.append(candidate)
    return kept


def box_iou(a: Box, b: Box) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _query_for(label: str, queries: list[str]) -> str:
    """The query a detector's label names: Grounding DINO returns the words it matched, which may
    be part of a query or run across two; the query sharing most words with it wins."""
    if label in queries:
        return label
    words = set(re.findall(r"[a-z0-9]+", label.lower())) - {"sep", "cls", "pad"}  # not BERT's special tokens
    overlap = [len(words & set(query.split())) for query in queries]
    return queries[int(np.argmax(overlap))]


class _FetchedDetector(TransformersDetector):
    """A detector whose weights are fetched (and verified by huggingface_hub) at its first use."""

    def __init__(self, fetch: Callable[[], Path], name: str, device: str, thresholds: Thresholds,
                 description: str) -> None:
        super().__init__(Path(name), device, thresholds, description)
        self._fetch = fetch

    def _load(self) -> tuple[Any, Any]:
        self.path = self._fetch()
        return super()._load()


def load(entry: ModelEntry, path: Path | None, context: LoadContext) -> TransformersDetector:
    """The registry's `load` for Grounding DINO and OWLv2: a transformers folder, loaded at first use."""
    settings = context.config.detector
    thresholds = Thresholds(settings.box_threshold, settings.text_threshold, settings.max_detections)
    description = context.description or entry.title
    if path is None:
        if context.fetch is None:
            raise EditorError(f"{entry.name} is not on this machine")
        return _FetchedDetector(context.fetch, entry.name, context.device, thresholds, description)
    return TransformersDetector(path, context.device, thresholds, description)
