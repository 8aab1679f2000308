"""Stable Diffusion inpainting through diffusers: loading, memory sharing, generation.

A pipeline's weights are loaded once and shared by every session. A call never runs the
loaded pipeline object that another call is running (its scheduler holds the call's timesteps
and step index): each call checks out a worker pipeline from a small pool, one per allowed
concurrent call, that shares the weights and has its own per-call state. Loading another
model releases the least recently used idle ones when the memory budget would be exceeded,
as a multi-model serving endpoint time-shares its memory.
"""
from __future__ import annotations

import copy
import inspect
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from editor.core.errors import EditCancelled, EditorError, ModelLoadError
from editor.models.base import InpaintRequest, OutOfMemory, Progress
from editor.models.loading import load_failure, out_of_memory_as, reason_with_cause, release_memory

if TYPE_CHECKING:
    from editor.core.config import Config
    from editor.models.registry import LoadContext, ModelEntry

OOM_ADVICE = "make fewer variations, a smaller selection, or set inpaint.cpu_offload=true"
COMPILE_BUCKET = 64  # with a compiled UNet, work sizes are padded to multiples of this
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


def sharing_is_safe(options: PipelineOptions) -> bool:
    """Whether several calls may run one loaded copy of the weights at once.

    Not with model CPU offload on CUDA: its hooks move each module onto the GPU and back
    around every call, so one call would pull the weights from under another.
    """
    return not (options.device == "cuda" and options.cpu_offload)


@dataclass
class _Loaded:
    """One loaded model: its pipeline, the memory it holds, and its pool of worker pipelines."""

    pipe: Any
    size: int
    idle: list[Any] = field(default_factory=list)
    made: int = 1  # worker pipelines made so far, the loaded one included
    users: int = 0  # calls holding or waiting for a worker: never released while above 0


class PipelineCache:
    """Loaded pipelines, shared by all sessions, kept within a memory budget.

    `workers` is how many calls may run one model at once (server.concurrency); each gets a
    worker pipeline of its own, and a call beyond that waits for one to come back. Where
    sharing the weights is unsafe the pool holds one worker.
    """

    def __init__(self, options: PipelineOptions, workers: int = 1) -> None:
        self.options = options
        self.workers = max(1, workers) if sharing_is_safe(options) else 1
        self._pipelines: OrderedDict[Path, _Loaded] = OrderedDict()
        self._failed: dict[Path, str] = {}  # for the process's life: the settings do not change while it runs
        self._lock = threading.Condition()

    def get(self, source: ModelSource) -> Any:
        """The loaded pipeline, loaded now if needed (to inspect it; a call runs through `checkout`)."""
        with self._lock:
            return self._entry(source).pipe

    @contextmanager
    def checkout(self, source: ModelSource) -> Iterator[Any]:
        """A worker pipeline of `source` for one call, used by nobody else until the call ends."""
        with self._lock:
            entry = self._entry(source)
            entry.users += 1
            try:
                while not entry.idle and entry.made >= self.workers:
                    self._lock.wait()
                worker = entry.idle.pop() if entry.idle else self._new_worker(entry)
            except BaseException:
                entry.users -= 1
                raise
        try:
            yield worker
        finally:
            with self._lock:
                entry.idle.append(worker)
                entry.users -= 1
                self._lock.notify_all()
                self._make_room(0, keep=next(reversed(self._pipelines), None))

    def error(self, source: ModelSource) -> str | None:
        """Why `source` failed to load (one line), or None."""
        return self._failed.get(source.path)

    def loaded(self) -> list[Path]:
        with self._lock:
            return list(self._pipelines)

    def _entry(self, source: ModelSource) -> _Loaded:
        if source.path in self._failed:
            raise ModelLoadError(self._failed[source.path])
        if source.path in self._pipelines:
            self._pipelines.move_to_end(source.path)
            return self._pipelines[source.path]
        self._make_room(estimate_bytes(source, self.options.dtype))
        try:
            pipe = load_pipeline(source, self.options)
        except Exception as exc:  # any type: CUDA out of memory while moving it, a damaged file, ...
            self._failed[source.path] = load_failure(f"the inpainting model {source.name}", exc)
        if source.path in self._failed:
            release_memory()
            raise ModelLoadError(self._failed[source.path])
        entry = _Loaded(pipe, pipeline_bytes(pipe), idle=[pipe])
        self._pipelines[source.path] = entry
        return entry

    def _new_worker(self, entry: _Loaded) -> Any:
        worker = worker_pipeline(entry.pipe)
        entry.made += 1
        if worker.vae is not entry.pipe.vae:
            entry.size += module_bytes(worker.vae)
        return worker

    def _make_room(self, needed: int, keep: Path | None = None) -> None:
        """Release idle models, least recently used first, until `needed` more bytes fit the budget.

        A model that a call is running or waiting for is never released under it.
        """
        in_use = sum(entry.size for entry in self._pipelines.values())
        released = False
        for path in list(self._pipelines):
            if in_use + needed <= self.options.memory_budget_bytes:
                break
            if path == keep or self._pipelines[path].users:
                continue
            in_use -= self._pipelines.pop(path).size
            released = True
        if released:
            release_memory()


def worker_pipeline(pipe: Any) -> Any:
    """Another pipeline object over the same weights, with the per-call state of its own.

    The scheduler holds a call's timesteps, sigmas and step index; a fast tokenizer's padding
    and truncation are set on it at each call; the pipeline object keeps the call's guidance
    and timestep count. The SDXL pipeline also casts an fp16 VAE that upcasts itself to fp32 and
    back during a call, so such a VAE is copied too. The UNet and the text encoders are only
    read, and are shared.
    """
    from diffusers import StableDiffusionXLInpaintPipeline

    components = dict(pipe.components)
    components["scheduler"] = copy.deepcopy(pipe.scheduler)
    for name in ("tokenizer", "tokenizer_2"):
        if components.get(name) is not None:
            components[name] = copy.deepcopy(components[name])
    vae = components.get("vae")
    if (isinstance(pipe, StableDiffusionXLInpaintPipeline) and vae.dtype == torch.float16
            and getattr(vae.config, "force_upcast", False)):
        components["vae"] = copy.deepcopy(vae)
    accepted = inspect.signature(type(pipe).__init__).parameters
    settings = {key: value for key, value in pipe.config.items() if key in accepted and key not in components}
    worker = type(pipe)(**components, **settings)
    if "_name_or_path" in pipe.config:
        worker.register_to_config(_name_or_path=pipe.config["_name_or_path"])
    worker.set_progress_bar_config(disable=True)
    return worker


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
        raise EditorError(f"cannot load inpainting model {source.name}: {reason_with_cause(exc)}") from None
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
    return sum(module_bytes(c) for c in pipe.components.values() if isinstance(c, torch.nn.Module))


def module_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _is_variant(path: Path, variant: str | None) -> bool:
    return path.name.endswith(f".{variant}.safetensors") if variant else path.name.count(".") == 1


class DiffusersInpainter:
    """Inpainting with a worker pipeline checked out of the shared cache for each call."""

    def __init__(self, source: ModelSource, pipelines: PipelineCache, description: str) -> None:
        self.source = source
        self.pipelines = pipelines
        self.description = description
        self.model_name = source.name
        self.native_size = source.native_size or _native_size_from_config(source.path)

    @property
    def load_error(self) -> str | None:
        """Why the model failed to load (one line, remembered), or None."""
        return self.pipelines.error(self.source)

    def load(self) -> None:
        """Load the weights now; raises ModelLoadError (remembered) when they cannot be loaded."""
        self.pipelines.get(self.source)

    def inpaint(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        request: InpaintRequest,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> list[np.ndarray]:
        height, width = image.shape[:2]
        if self.pipelines.options.compile_unet:  # a few fixed shapes instead of one per photo
            image, mask = _pad_to_bucket(image, mask, COMPILE_BUCKET)

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if cancel is not None and cancel.is_set():
                raise EditCancelled("generation cancelled")  # stops within this step
            if progress is not None:
                progress(step + 1, pipeline.num_timesteps)
            return tensors

        with out_of_memory_as(OOM_ADVICE), self.pipelines.checkout(self.source) as pipe, torch.inference_mode():
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


def pipeline_options(config: Config, device: str) -> PipelineOptions:
    """The pipeline settings `inpaint.*` asks for on `device`."""
    settings = config.inpaint
    return PipelineOptions(device, settings.cpu_offload, settings.vae_tiling,
                           int(settings.memory_budget_gb * 2**30), settings.compile)


def pipeline_cache(config: Config, device: str) -> PipelineCache:
    """The pipeline cache the settings ask for: one model's, or the one the models of a pool share."""
    return PipelineCache(pipeline_options(config, device), workers=config.server.concurrency)


def model_source(entry: ModelEntry, path: Path) -> ModelSource:
    """A registry entry's diffusers folder, with its variant and fp16-safe VAE (a companion repo)."""
    if entry.source is None:  # a local folder: everything is read from it
        return ModelSource(str(path), path)
    from editor.models.weights import companion_paths

    companions = companion_paths(entry)
    if any(companion is None for companion in companions):
        raise EditorError(f"{entry.name} needs {', '.join(entry.source.companions)}, which is not here: "
                          f"run `python -m editor download {entry.name}`")
    vae = companions[0] if companions else None
    return ModelSource(entry.name, path, entry.source.variant, vae, entry.native_size)


class FetchedInpainter:
    """An inpainter whose weights are fetched at the first generative edit, then loaded.

    `load()` (the warm-up at start) leaves a model that is not here yet alone: the download
    waits for the first edit that needs it.
    """

    def __init__(self, entry: ModelEntry, fetch: Callable[[], Path], make: Callable[[Path], DiffusersInpainter],
                 description: str) -> None:
        from editor.models.loading import LoadOnce

        self.description = description
        self.model_name = entry.name
        self._native_size = entry.native_size
        self._slot: LoadOnce[DiffusersInpainter] = LoadOnce(f"the inpainting model {entry.name}",
                                                            lambda: make(fetch()))

    @property
    def native_size(self) -> int:
        if self._slot.loaded:
            return self._slot.get().native_size
        return self._native_size or 512  # a hub id without an entry: SD 2's size until its config is here

    @property
    def load_error(self) -> str | None:
        if self._slot.error is not None:
            return self._slot.error
        return self._slot.get().load_error if self._slot.loaded else None

    def load(self) -> None:
        if self._slot.loaded:
            self._slot.get().load()

    def inpaint(self, image: np.ndarray, mask: np.ndarray, request: InpaintRequest, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> list[np.ndarray]:
        inpainter = self._slot.get()
        inpainter.load()
        return inpainter.inpaint(image, mask, request, progress, cancel)


def load(entry: ModelEntry, path: Path | None, context: LoadContext) -> DiffusersInpainter | FetchedInpainter:
    """The registry's `load` for Stable Diffusion inpainting: one pipeline cache per model object, or the
    one the models of a pool share (`LoadContext.shared_cache`)."""
    pipelines = context.shared_cache or pipeline_cache(context.config, context.device)
    description = context.description or entry.title

    def make(folder: Path) -> DiffusersInpainter:
        return DiffusersInpainter(model_source(entry, folder), pipelines, description)

    if path is not None:
        return make(path)
    if context.fetch is None:
        raise EditorError(f"{entry.name} is not on this machine")
    return FetchedInpainter(entry, context.fetch, make, description)
