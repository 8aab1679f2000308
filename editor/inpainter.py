"""Stable Diffusion inpainting through diffusers: loading, memory sharing, generation.

A pipeline is loaded once and reused by every session. Loading another model releases the
least recently used ones when the memory budget would be exceeded, as a multi-model serving
endpoint time-shares its memory.
"""
from __future__ import annotations

import gc
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from editor.errors import EditCancelled, EditorError

COMPILE_BUCKET = 64  # with a compiled UNet, work sizes are padded to multiples of this
Progress = Callable[[int, int], None]  # (steps done, steps in all)


@dataclass(frozen=True)
class InpaintRequest:
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    strength: float
    seed: int
    num_images: int = 1


class Inpainter(Protocol):
    description: str
    model_name: str
    native_size: int

    def load(self) -> None:
        """Load the model now rather than at the first edit."""

    def inpaint(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        request: InpaintRequest,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> list[np.ndarray]:
        """Repaint the masked part of `image` (`HxWx3 uint8`, sides multiples of 8) as asked.

        Returns `request.num_images` images of the same size.
        """


@dataclass(frozen=True)
class ModelSource:
    """A diffusers inpainting model on this machine."""

    name: str  # what the person configured: sdxl, sd2, a hub id or a folder
    path: Path  # the local diffusers folder
    variant: str | None = None  # e.g. "fp16" weight files
    vae_path: Path | None = None  # a replacement VAE (SDXL's fp16-safe one)
    native_size: int | None = None  # None: read from the UNet's config


@dataclass(frozen=True)
class PipelineOptions:
    device: str  # "cpu" or "cuda"
    cpu_offload: bool
    vae_tiling: bool
    memory_budget_bytes: int
    compile_unet: bool = False  # torch.compile the UNet; sizes are bucketed so it compiles once per bucket

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.device == "cuda" else torch.float32


class PipelineCache:
    """Loaded pipelines, shared by all sessions, kept within a memory budget."""

    def __init__(self, options: PipelineOptions) -> None:
        self.options = options
        self._pipelines: OrderedDict[Path, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: ModelSource) -> Any:
        with self._lock:
            if source.path in self._pipelines:
                self._pipelines.move_to_end(source.path)
                return self._pipelines[source.path][0]
            self._make_room(estimate_bytes(source, self.options.dtype))
            pipe = load_pipeline(source, self.options)
            self._pipelines[source.path] = (pipe, pipeline_bytes(pipe))
            return pipe

    def loaded(self) -> list[Path]:
        return list(self._pipelines)

    def _make_room(self, needed: int) -> None:
        in_use = sum(size for _, size in self._pipelines.values())
        while self._pipelines and in_use + needed > self.options.memory_budget_bytes:
            _, (pipe, size) = self._pipelines.popitem(last=False)
            in_use -= size
            del pipe
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def load_pipeline(source: ModelSource, options: PipelineOptions) -> Any:
    """Load with the settings that fit the device: fp16 and offload on CUDA, fp32 on the CPU."""
    from diffusers import AutoencoderKL, AutoPipelineForInpainting

    kwargs: dict[str, Any] = {"dtype": options.dtype, "local_files_only": True}
    if source.variant:
        kwargs["variant"] = source.variant
    try:
        if source.vae_path is not None:
            kwargs["vae"] = AutoencoderKL.from_pretrained(source.vae_path, dtype=options.dtype, local_files_only=True)
        pipe = AutoPipelineForInpainting.from_pretrained(source.path, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EditorError(f"cannot load inpainting model {source.name}: {reason[:200]}") from None
    if options.device == "cuda":
        # The convolutions' fastest cuDNN kernels want NHWC tensors.
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        if options.cpu_offload:
            pipe.enable_model_cpu_offload()  # raises without CUDA, hence only here
        else:
            pipe.to("cuda")
    if options.compile_unet:
        pipe.unet.compile(dynamic=False)  # in place, so offload hooks stay on the module
    # VAE slicing decodes a batch of variations one at a time; tiling bounds memory on big crops.
    pipe.vae.enable_slicing()
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    # diffusers uses PyTorch's scaled-dot-product attention by default; attention slicing stays off.
    pipe.set_progress_bar_config(disable=True)
    return pipe


def estimate_bytes(source: ModelSource, dtype: torch.dtype) -> int:
    """Memory a model will take, from its weight files on disk (before loading it)."""
    files = [p for p in source.path.glob("*/*.safetensors") if _is_variant(p, source.variant)]
    on_disk = sum(p.stat().st_size for p in files)
    if source.variant == "fp16" and dtype == torch.float32:
        on_disk *= 2
    return on_disk


def pipeline_bytes(pipe: Any) -> int:
    return sum(
        p.numel() * p.element_size()
        for component in pipe.components.values()
        if isinstance(component, torch.nn.Module)
        for p in component.parameters()
    )


def _is_variant(path: Path, variant: str | None) -> bool:
    return path.name.endswith(f".{variant}.safetensors") if variant else path.name.count(".") == 1


class DiffusersInpainter:
    """Inpainting with a diffusers pipeline taken from the shared cache at each call."""

    def __init__(self, source: ModelSource, pipelines: PipelineCache, description: str) -> None:
        self.source = source
        self.pipelines = pipelines
        self.description = description
        self.model_name = source.name
        self.native_size = source.native_size or _native_size_from_config(source.path)

    def load(self) -> None:
        self.pipelines.get(self.source)

    def inpaint(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        request: InpaintRequest,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> list[np.ndarray]:
        pipe = self.pipelines.get(self.source)
        height, width = image.shape[:2]
        if self.pipelines.options.compile_unet:  # a few fixed shapes instead of one per photo
            image, mask = _pad_to_bucket(image, mask, COMPILE_BUCKET)

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if cancel is not None and cancel.is_set():
                raise EditCancelled("generation cancelled")  # stops within this step
            if progress is not None:
                progress(step + 1, pipeline.num_timesteps)
            return tensors

        with torch.inference_mode():
            result = pipe(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or None,
                image=Image.fromarray(image),
                mask_image=Image.fromarray(mask),
                height=image.shape[0],
                width=image.shape[1],
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                strength=request.strength,
                num_images_per_prompt=request.num_images,
                generator=torch.Generator("cpu").manual_seed(request.seed),
                callback_on_step_end=on_step_end,
                output_type="np",
            )
        return [np.clip(np.rint(frame[:height, :width] * 255), 0, 255).astype(np.uint8) for frame in result.images]


def _pad_to_bucket(image: np.ndarray, mask: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad the bottom and right up to multiples of `step`: the image with its edge pixels,
    the mask with zeros (kept), so that a compiled UNet sees few distinct shapes."""
    height, width = image.shape[:2]
    pad_y, pad_x = -height % step, -width % step
    if not pad_x and not pad_y:
        return image, mask
    return (np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge"),
            np.pad(mask, ((0, pad_y), (0, pad_x)), constant_values=0))


def _native_size_from_config(path: Path) -> int:
    """The UNet's training resolution: sample_size latents times the VAE's downscaling."""
    try:
        unet = json.loads((path / "unet" / "config.json").read_text())
        vae = json.loads((path / "vae" / "config.json").read_text())
    except (OSError, ValueError):
        raise EditorError(f"{path} is not a diffusers inpainting folder (no unet/ or vae/ config)") from None
    scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    return int(unet.get("sample_size", 64)) * scale
