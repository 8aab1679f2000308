"""Selecting objects with SAM 2.1 or EdgeTAM through transformers, with a per-image embedding cache.

Both are SAM 2 image predictors (`Sam2Model`, `EdgeTamModel`: EdgeTAM swaps the Hiera encoder
for a small RepViT from timm), with the same prompt encoder and mask decoder. `prepare` runs
the image encoder once per image version (`get_image_embeddings`: three feature maps, cached by
the image's content key); `segment` runs only the decoder, with those maps passed back as
`image_embeddings` and the previous click's low-resolution logits as `input_masks`. The model
loads on first use (or at `load`), so the page is served at once; a failed load is remembered in
one line and clicks select with GrabCut instead. One model serves every session, one
computation at a time.

The image processor's work is done here without it, as it costs more than EdgeTAM's encoder on
a 12 MP photo through PIL: the same antialiased bilinear resize (torch's, on uint8, which the
processor calls), rescale and normalise; the final mask is upscaled with OpenCV, bilinear with
the same pixel-centre convention as the processor's `post_process_masks`.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from editor.core import masks
from editor.core.errors import EditorError, ModelUnavailableError
from editor.core.prompts import Prompts
from editor.models.base import ImageExpired, ImageRef, Segmentation, fetch_command
from editor.models.embedding_cache import tensor_bytes
from editor.models.shared_segmenter import EXPIRED, SharedSegmenter
from editor.models.registry import LoadContext, ModelEntry

MODEL_TYPES = ("sam2", "edgetam")  # config.json's model_type, as the registry's options name it
MASK_THRESHOLD = 0.0  # logits above this are selected (the processor's default)


@dataclass(frozen=True)
class Preprocessing:
    """What the folder's image processor does to a photo: resize (stretched, not padded),
    rescale and normalise. Read from its `preprocessor_config.json`."""

    height: int
    width: int
    scale: float  # the rescale factor (1/255), or 1 when the processor does not rescale
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def read(cls, folder: Path) -> Preprocessing:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(folder)
        size = processor.size
        height, width = getattr(size, "height", None), getattr(size, "width", None)
        if not (processor.do_resize and height and width):
            raise EditorError(f"{folder.name}: its image processor does not resize to a fixed height and width "
                              "as SAM 2 does")
        normalise = processor.do_normalize
        return cls(int(height), int(width), float(processor.rescale_factor) if processor.do_rescale else 1.0,
                   tuple(processor.image_mean) if normalise else (0.0, 0.0, 0.0),
                   tuple(processor.image_std) if normalise else (1.0, 1.0, 1.0))

    def pixel_values(self, image: np.ndarray) -> torch.Tensor:
        """`HxWx3 uint8` RGB as the model's `1x3xHxW float32` input, as the processor computes it."""
        # Channels-last uint8 is torch's fast path. A read-only photo is not copied (36 MB at 12 MP):
        # nothing writes to it, so torch's warning about read-only arrays is silenced here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        if pixels.shape[-2:] != (self.height, self.width):
            pixels = F.interpolate(pixels, (self.height, self.width), mode="bilinear", antialias=True,
                                   align_corners=False)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((pixels.float() * self.scale - mean) / std).contiguous()


@dataclass(frozen=True)
class Embedding:
    """The image encoder's feature maps for one photo (high resolution first), and its size."""

    features: list[torch.Tensor]
    height: int
    width: int

    @property
    def nbytes(self) -> int:
        return tensor_bytes(self.features)


@dataclass(frozen=True)
class Loaded:
    model: Any  # Sam2Model | EdgeTamModel
    preprocessing: Preprocessing
    positional: torch.Tensor  # the decoder's image-wide positional embedding: the same for every click


class TransformersSegmenter(SharedSegmenter[Loaded]):
    """SAM 2.1 or EdgeTAM from a local transformers folder, loaded on first use and shared."""

    def __init__(self, loader: Callable[[], Loaded], description: str, cache_bytes: int, title: str = "SAM 2",
                 source: str = "") -> None:
        """`loader` loads the model and reads its preprocessing (once, at first use); `cache_bytes`
        bounds the image embeddings and click results kept, all photos together. `title` and
        `source` (its folder) name the model in a load failure."""
        super().__init__(loader, description, cache_bytes, title, source)

    @property
    def model(self) -> Any:
        """The model, loaded on first use; raises ModelLoadError if it failed to load (tried once)."""
        return self._slot.get().model

    def prepare(self, image: np.ndarray) -> ImageRef:
        """Encode `image` (`HxWx3 uint8`) unless its embedding is kept already; name it for the clicks."""
        loaded = self._loaded()
        if loaded is None:
            return self._fallback.prepare(image)  # the failure is in the status, once
        key = self._cache.keys(image)
        ref = ImageRef(key, image.shape[1], image.shape[0])
        with self._lock:
            if self._cache.embedding(key) is not None:
                return ref
        pixels = loaded.preprocessing.pixel_values(image)  # outside the lock: no model in it
        with self._lock, torch.inference_mode():
            if self._cache.embedding(key) is None:  # another session may have encoded it meanwhile
                model = loaded.model
                features = model.get_image_embeddings(pixels.to(model.device, model.dtype))
                embedding = Embedding(list(features), ref.height, ref.width)
                self._cache.put_embedding(key, embedding, embedding.nbytes)
        return ref

    def segment(self, ref: ImageRef, prompts: Prompts, previous: np.ndarray | None = None) -> Segmentation:
        """The object the validated prompts select, refining click by click.

        The first click alone asks for three masks and keeps the best-scoring one; each further
        click asks for one, with the previous click's low-resolution logits as its mask prompt:
        `previous` (from the last `Segmentation`), or else the cached steps, replayed where
        missing. Raises ImageExpired when the image's embedding was released.
        """
        loaded = self._loaded()
        if loaded is None:
            return self._fallback.segment(ref, prompts, previous)
        model = loaded.model
        with self._lock, torch.inference_mode():
            embedding = self._cache.embedding(ref.key)
            if embedding is None:
                raise ImageExpired(EXPIRED)
            start = None if previous is None else torch.as_tensor(previous, device=model.device)[None].to(model.dtype)
            logits = self._cache.decode(
                ref.key, prompts, start, lambda step, last: _decode(loaded, embedding, step, last))
        low_res = logits[0].float().cpu().numpy()
        return Segmentation(full_size_mask(low_res, ref.height, ref.width), low_res)



def _decode(loaded: Loaded, embedding: Embedding, step: Prompts, logits: torch.Tensor | None) -> torch.Tensor:
    """One click's low-resolution mask logits (`1xhxw`): the best-scoring of those asked for, or the
    candidate the prompts name.

    What `Sam2Model.forward` does given `image_embeddings`, less recomputing the positional
    embedding at every click. Coordinates go from the photo's pixels to the model's input, as
    the processor scales them.
    """
    model, preprocessing = loaded.model, loaded.preprocessing
    device, dtype = model.device, model.dtype
    sx, sy = preprocessing.width / embedding.width, preprocessing.height / embedding.height
    points = labels = boxes = masks_in = None
    if step.points:
        points = torch.tensor([[[[x * sx, y * sy] for x, y in step.points]]], dtype=dtype, device=device)
        labels = torch.tensor([[list(step.labels)]], dtype=torch.int64, device=device)
    if step.box is not None:
        x0, y0, x1, y1 = step.box
        boxes = torch.tensor([[[x0 * sx, y0 * sy, x1 * sx, y1 * sy]]], dtype=dtype, device=device)
    if logits is not None:
        masks_in = logits[None]
        if masks_in.shape[-2:] != model.prompt_encoder.mask_input_size:  # a caller's logits of another size
            masks_in = F.interpolate(masks_in.float(), model.prompt_encoder.mask_input_size, mode="bilinear",
                                     align_corners=False, antialias=True).to(dtype)
    sparse, dense = model.prompt_encoder(input_points=points, input_labels=labels, input_boxes=boxes,
                                         input_masks=masks_in)
    multimask = logits is None and len(step.points) == 1 and step.box is None
    low_res, scores, _, _ = model.mask_decoder(
        image_embeddings=embedding.features[-1], image_positional_embeddings=loaded.positional,
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
        high_resolution_features=embedding.features[:-1])
    best = int(torch.argmax(scores[0, 0])) if not multimask or step.candidate is None else step.candidate
    return low_res[0, 0, min(best, low_res.shape[2] - 1)][None]


def full_size_mask(low_res: np.ndarray, height: int, width: int) -> np.ndarray:
    """The processor's `post_process_masks` (bilinear, half-pixel centres, then > 0), by OpenCV:
    several times faster than torch for a 12-megapixel mask on a CPU."""
    full = cv2.resize(low_res, (width, height), interpolation=cv2.INTER_LINEAR)
    return masks.from_bool(full > MASK_THRESHOLD)


def load_model(folder: Path, model_type: str, device: str) -> Loaded:
    """The model in `folder` (a `save_pretrained` folder of `model_type`) and its preprocessing.
    fp16 on CUDA, fp32 on the CPU."""
    from transformers import AutoConfig, EdgeTamModel, Sam2Model

    found = AutoConfig.from_pretrained(folder).model_type
    if found != model_type:
        raise EditorError(f"{folder} holds a {found} model, not {model_type}")
    preprocessing = Preprocessing.read(folder)
    model_class = Sam2Model if model_type == "sam2" else EdgeTamModel
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = model_class.from_pretrained(folder, dtype=dtype).to(device).eval()
    with torch.inference_mode():
        positional = model.get_image_wide_positional_embeddings()
    return Loaded(model, preprocessing, positional)


def load(entry: ModelEntry, path: Path | None, context: LoadContext) -> TransformersSegmenter:
    """The registry's loader: a segmenter for `entry` (SAM 2.1 or EdgeTAM) whose weights are the
    local folder `path`; the model loads at first use, a failure there is remembered."""
    model_type = entry.options.get("model_type")
    if model_type not in MODEL_TYPES:
        raise EditorError(f"{entry.name}: model_type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    if path is None and context.fetch is None:
        raise ModelUnavailableError(f"{entry.name} is not on this machine: run `{fetch_command(entry.name)}`")
    where = str(path) if path is not None else entry.source.hub if entry.source else entry.name
    cache_bytes = int(context.config.segmenter.embedding_cache_mb * 2**20)
    return TransformersSegmenter(lambda: load_model(context.locate(entry, path), model_type, context.device),
                                 context.description or f"{entry.name} ({where}) on {context.device}", cache_bytes,
                                 entry.title, where)
