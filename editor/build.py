"""From settings to working backends: which device, which SAM checkpoint, which inpainting model.

`plan_backends` only looks (no model is loaded, nothing is downloaded), so `info` is instant
and honest; `build_engine` loads what the plan names, fetching missing weights first when
`auto_download` is on and the network is allowed, and falls back to classical algorithms,
saying so, when weights are missing. The detector ("select by name") is optional: without it
everything else works, and asking for it says how to get it. A model that is here but fails to
load falls back the same way, and `Engine.status()` says why. `check_concurrency` refuses, at
start, a `server.concurrency` the loaded models could not honour.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from editor.models import weights
from editor.core.config import Config
from editor.engine.ops import DETECTOR_DOWNLOAD_HINT, DOWNLOAD_HINT, Backends, Engine
from editor.core.errors import ConfigError, EditorError

if TYPE_CHECKING:
    from editor.models.diffusers_inpaint import PipelineOptions

SAM_PREFERENCE = {"cuda": ("vit_h", "vit_l", "vit_b"), "cpu": ("vit_b", "vit_l", "vit_h")}
SAM_DOWNLOAD_HINT = "python -m editor download sam"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class SamPlan:
    path: Path | None  # None: no checkpoint here
    model_type: str  # what the config asks for, or the type to fetch
    download: bool = False  # fetch it before loading


@dataclass(frozen=True)
class InpaintPlan:
    name: str  # preset, hub id or folder, as configured
    path: Path | None  # local diffusers folder; None when missing
    variant: str | None = None
    vae_path: Path | None = None
    native_size: int | None = None
    download: bool = False


@dataclass(frozen=True)
class DetectorPlan:
    name: str  # hub id or folder, as configured
    path: Path | None  # local transformers folder; None when missing
    download: bool = False


@dataclass(frozen=True)
class Plan:
    device: str
    sam: SamPlan
    inpaint: InpaintPlan
    detector: DetectorPlan


def resolve_device(setting: str) -> str:
    import torch

    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is available here: use device=auto or device=cpu")
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def plan_backends(config: Config) -> Plan:
    device = resolve_device(config.device)
    can_fetch = config.auto_download and not weights.offline()
    return Plan(device, _plan_sam(config, device, can_fetch), _plan_inpaint(config, device, can_fetch),
                _plan_detector(config, can_fetch))


def _plan_sam(config: Config, device: str, can_fetch: bool) -> SamPlan:
    wanted = config.sam.model_type
    if config.sam.checkpoint != "auto":
        path = Path(config.sam.checkpoint).expanduser()
        if not path.is_file():
            raise ConfigError(f"sam.checkpoint {config.sam.checkpoint} does not exist")
        return SamPlan(path, wanted)
    order = (wanted,) if wanted != "auto" else SAM_PREFERENCE[device]
    for model_type in order:
        path = weights.sam_checkpoint_path(model_type, Path(config.models_dir))
        if path.is_file():
            return SamPlan(path, model_type)
    return SamPlan(None, order[0], download=can_fetch)


def _plan_inpaint(config: Config, device: str, can_fetch: bool) -> InpaintPlan:
    name = config.inpaint.model
    if name == "auto":
        name = "sdxl" if device == "cuda" else "sd2"
    preset = weights.INPAINT_PRESETS.get(name)
    if preset is not None:
        path = weights.cached_hub_snapshot(preset.repo_id)
        vae = weights.cached_hub_snapshot(preset.vae_repo_id) if preset.vae_repo_id else None
        missing = path is None or (preset.vae_repo_id is not None and vae is None)
        return InpaintPlan(name, None if missing else path, preset.variant, vae, preset.native_size,
                           download=missing and can_fetch)
    path = _folder_or_cached("inpaint.model", name, "model_index.json", "diffusers",
                             "sdxl, sd2, a hub id (owner/name) or an existing folder")
    return InpaintPlan(name, path, download=path is None and can_fetch)


def _plan_detector(config: Config, can_fetch: bool) -> DetectorPlan:
    name = config.detector.model
    path = _folder_or_cached("detector.model", name, "config.json", "transformers",
                             "a hub id (owner/name) or an existing folder", weights.detector_patterns())
    return DetectorPlan(name, path, download=path is None and can_fetch)


def _folder_or_cached(key: str, name: str, marker: str, library: str, choices: str,
                      patterns: tuple[list[str], list[str]] | None = None) -> Path | None:
    """A model given as a local folder or a hub id: the folder, the cached hub copy, or None."""
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / marker).is_file():
            raise ConfigError(f"{key} {name} is a folder but not a {library} model (no {marker})")
        return local
    if name.startswith((".", "/", "~")) or not _HUB_ID.match(name):
        raise ConfigError(f"{key} {name} is not {choices}")
    return weights.cached_hub_snapshot(name, patterns=patterns)


def describe(plan: Plan, config: Config) -> Backends:
    """One line per backend, naming what will really run."""
    hints = []
    if plan.sam.path is not None:
        segmenter = f"sam {_sam_type(plan.sam)}({plan.sam.path}) on {plan.device}"
    elif plan.sam.download:
        segmenter = f"sam {plan.sam.model_type} (downloads on first use)"
    else:
        segmenter = "grabcut (no SAM checkpoint)"
        hints.append(SAM_DOWNLOAD_HINT)
    if plan.inpaint.path is not None or plan.inpaint.download:
        inpainter = f"{_inpaint_label(plan.inpaint)} {_precision(plan.device, config)}"
        if plan.inpaint.path is None:
            inpainter += " (downloads on first use)"
        eraser = f"{plan.inpaint.name} over an OpenCV pre-fill"
    else:
        inpainter = f"none ({plan.inpaint.name} not downloaded)"
        eraser = "opencv telea (no inpainting model)"
        hints.append(DOWNLOAD_HINT)
    hint = " and ".join(f"`{h}`" for h in hints)
    return Backends(plan.device, segmenter, inpainter, eraser, f"get the models with {hint}" if hints else "",
                    _detector_label(plan, config))


def _detector_label(plan: Plan, config: Config) -> str:
    detector = plan.detector
    if detector.path is None and not detector.download:
        return f"none ({detector.name} not downloaded: run `{DETECTOR_DOWNLOAD_HINT}`)"
    precision = "fp16 on cuda" if plan.device == "cuda" else "fp32 on cpu"
    later = " (downloads on first use)" if detector.path is None else ""
    return (f"{detector.name} {precision}, box threshold {config.detector.box_threshold:g}, "
            f"text threshold {config.detector.text_threshold:g}{later}")


def check_concurrency(config: Config, plan: Plan) -> None:
    """Refuse, in one line, more model calls at once than the models can run safely.

    Each concurrent edit gets a worker pipeline of its own over the shared weights, except
    with model CPU offload on CUDA, whose hooks move the one copy of the weights between the
    devices around each call: that leaves one call at a time. SAM and the detector take one
    call at a time under a lock, whatever the setting: the others wait, nothing breaks.
    """
    from editor.models.diffusers_inpaint import sharing_is_safe

    wanted = config.server.concurrency
    has_inpainter = plan.inpaint.path is not None or plan.inpaint.download
    if wanted > 1 and has_inpainter and not sharing_is_safe(_pipeline_options(config, plan.device)):
        raise ConfigError(f"server.concurrency={wanted} needs inpaint.cpu_offload=false on cuda (offloading moves "
                          "one shared copy of the model between devices at each call): set inpaint.cpu_offload=false "
                          "if the GPU holds the model, or server.concurrency=1")


def _pipeline_options(config: Config, device: str) -> PipelineOptions:
    from editor.models.diffusers_inpaint import PipelineOptions

    return PipelineOptions(device, config.inpaint.cpu_offload, config.inpaint.vae_tiling,
                           int(config.inpaint.memory_budget_gb * 2**30), config.inpaint.compile)


def build_engine(config: Config, show_progress: bool = True) -> Engine:
    """The planned backends, ready to load: SAM, the inpainting pipeline and the detector load
    on first use (or at `Engine.warm_up`), so that building the engine takes no time."""
    from editor.models.detector import Thresholds, TransformersDetector
    from editor.models.diffusers_inpaint import DiffusersInpainter, ModelSource, PipelineCache
    from editor.models.sam import GrabCutSegmenter, SamSegmenter
    from editor.models.opencv import OpenCvEraser

    plan = _fetch_missing(plan_backends(config), config, show_progress)
    backends = describe(plan, config)
    if plan.sam.path is not None:
        load = functools.partial(_load_sam, plan.sam.path, config.sam.model_type, plan.device)
        segmenter = SamSegmenter(load, backends.segmenter, int(config.sam.embedding_cache_mb * 2**20))
    else:
        segmenter = GrabCutSegmenter()
    inpainter = None
    if plan.inpaint.path is not None:
        source = ModelSource(plan.inpaint.name, plan.inpaint.path, plan.inpaint.variant,
                             plan.inpaint.vae_path, plan.inpaint.native_size)
        pipelines = PipelineCache(_pipeline_options(config, plan.device), workers=config.server.concurrency)
        inpainter = DiffusersInpainter(source, pipelines, backends.inpainter)
    detector = None
    if plan.detector.path is not None:  # loads on first use: most sessions never select by name
        thresholds = Thresholds(config.detector.box_threshold, config.detector.text_threshold,
                                config.detector.max_detections)
        detector = TransformersDetector(plan.detector.path, plan.device, thresholds, backends.detector)
    return Engine(segmenter, inpainter, backends, config.inpaint, config.composite, config.erase, detector,
                  limits=config.limits, prefill=OpenCvEraser(), eraser_config=config.eraser)


def _load_sam(path: Path, model_type: str, device: str):  # type: ignore[no-untyped-def]
    from editor.models.sam_loader import load_sam

    return load_sam(path, model_type, device)[0]


def _fetch_missing(plan: Plan, config: Config, show_progress: bool) -> Plan:
    """Download what auto_download allows; a failed download leaves the fallback in place."""
    sam, inpaint, detector = plan.sam, plan.inpaint, plan.detector
    if sam.download:
        try:
            path = weights.fetch_sam(sam.model_type, Path(config.models_dir), show_progress)
            sam = SamPlan(path, sam.model_type)
        except EditorError:
            sam = SamPlan(None, sam.model_type)
    if inpaint.download:
        try:
            weights.fetch_inpaint_model(inpaint.name, show_progress)
            inpaint = _plan_inpaint(config, plan.device, can_fetch=False)
        except EditorError:
            inpaint = InpaintPlan(inpaint.name, None)
    if detector.download:
        try:
            detector = DetectorPlan(detector.name, Path(weights.fetch_detector(detector.name, show_progress)))
        except EditorError:
            detector = DetectorPlan(detector.name, None)
    return Plan(plan.device, sam, inpaint, detector)


def _sam_type(sam: SamPlan) -> str:
    """"vit_b " and the like, read from the file if need be; "" for a file that cannot be read
    (loading it will fail and say why, and clicks go to GrabCut)."""
    if sam.model_type != "auto":
        return f"{sam.model_type} "
    for known in weights.SAM_CHECKPOINTS.values():
        if sam.path is not None and sam.path.name == known.filename:
            return f"{known.model_type} "
    from editor.models.sam_loader import infer_architecture, read_checkpoint

    try:
        return f"{infer_architecture(read_checkpoint(sam.path)).model_type} "  # type: ignore[arg-type]
    except (EditorError, KeyError, IndexError, ZeroDivisionError):
        return ""


def _inpaint_label(inpaint: InpaintPlan) -> str:
    preset = weights.INPAINT_PRESETS.get(inpaint.name)
    if preset is not None:
        return f"{preset.name} inpainting ({preset.repo_id})"
    if inpaint.path is not None and Path(inpaint.name).expanduser().is_dir():
        return f"diffusers inpainting ({inpaint.name})"
    return f"{inpaint.name} inpainting"


def _precision(device: str, config: Config) -> str:
    if device == "cuda":
        return "fp16 + CPU offload on cuda" if config.inpaint.cpu_offload else "fp16 on cuda"
    return "fp32 on cpu"
