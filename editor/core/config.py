"""Typed, validated settings loaded from config.yaml plus `--set key=value` overrides.

Only entry points (the CLI, app.py) call `load_config`; everything else receives these objects.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from editor.core.errors import ConfigError

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class SegmenterConfig:
    # auto | a registry name (`python -m editor models`) | PATH (a SAM .pth, a SAM 2.1 or EdgeTAM folder) | HUB_ID
    model: str = "auto"
    embedding_cache_mb: float = 64  # image embeddings and click results kept, all photos together


@dataclass(frozen=True)
class EraserConfig:
    # auto (lama when here, else generative, else opencv) | lama | generative | opencv | PATH (a LaMa .pt/.safetensors)
    model: str = "auto"
    margin_px: int = 128  # context around each selected region that the eraser sees (one crop per region)
    max_side: int = 1024  # a larger crop is resized down to this for the eraser, and its result back up
    # the hole the eraser fills is the selection dilated this much (a tight mask leaves ghosts of the object's
    # edge) and all of the paste band (composite.grow and .feather); nothing outside that band changes
    grow_px: int = 9


@dataclass(frozen=True)
class InpaintConfig:
    model: str = "auto"  # auto (sdxl on CUDA, sd2 on CPU) | a registry name | HUB_ID | LOCAL_DIR (diffusers)
    cpu_offload: bool = True  # CUDA only: keep idle sub-models in RAM
    vae_tiling: bool = True  # decode large images tile by tile
    compile: bool = False  # torch.compile the UNet (slow first edit per size bucket, faster after)
    memory_budget_gb: float = 24.0  # loaded pipelines beyond this are released, oldest first
    # More models a person may choose per edit, beside inpaint.model (the default): registry names, HUB_IDs or
    # LOCAL_DIRs. They share the loaded pipelines' memory_budget_gb: the least recently used is released first.
    models: tuple[str, ...] = ()
    steps: int = 30
    guidance: float = 7.5
    strength: float = 0.99
    num_images: int = 1
    negative_prompt: str = "blurry, low quality, distorted, watermark, text"


@dataclass(frozen=True)
class DetectorConfig:
    model: str = "auto"  # auto (grounding-dino-tiny) | a registry name | HUB_ID | LOCAL_DIR (Grounding DINO, OWLv2)
    box_threshold: float = 0.35  # keep boxes scoring above this
    text_threshold: float = 0.25  # Grounding DINO: words scoring above this name a box
    max_detections: int = 10  # the best-scoring boxes kept; each costs one SAM call


@dataclass(frozen=True)
class UpscalerConfig:
    # auto (realesr-general-x4v3 on CPU, realesrgan-x4plus on CUDA, else a Lanczos resize) | a registry name
    # | PATH (a Real-ESRGAN .pth or .safetensors file)
    model: str = "auto"
    tile: int = 512  # the model sees tiles of this side (plus the overlap), so that any photo fits in memory
    overlap: int = 16  # context on each side of a tile, cut off after: no seams where tiles meet


@dataclass(frozen=True)
class CompositeConfig:
    context: float = 0.5  # context around the mask, as a fraction of the mask's box size
    min_context_px: int = 32  # at least this much context on each side
    grow: int = 8  # pixels the mask is grown before pasting back
    feather: int = 8  # pixels of soft edge outside the grown mask
    match_color: bool = True  # match the new region's colour to its surroundings
    # auto: a background generated smaller than its region is enlarged with the upscaling model (when one is
    # here, not the Lanczos fallback) before it is pasted; off: a plain resize
    upscale_background: Literal["auto", "off"] = "auto"


@dataclass(frozen=True)
class EraseConfig:
    prompt: str = "empty background, seamless continuation of the surroundings, natural texture"
    negative_prompt: str = (
        "object, person, animal, text, watermark, logo, frame, new item, artifact, blurry"
    )
    strength: float = 0.85  # below 1.0 keeps the classical pre-fill's structure


@dataclass(frozen=True)
class ExportConfig:
    """How a download and the CLI's output are written; the photo's EXIF, XMP, DPI and edit history always go along."""

    format: Literal["png", "jpeg", "tiff"] = "png"  # png (lossless, default) | jpeg | tiff (lossless, uncompressed)
    colour: Literal["keep", "srgb"] = "keep"  # keep: the photo's own profile, pixels untouched | srgb: converted
    jpeg_quality: int = 95  # 1..100


@dataclass(frozen=True)
class Range:
    """The values a setting, a request and the page's slider all accept: low..high in steps of `step`."""

    low: float
    high: float
    step: float = 1

    def __contains__(self, value: object) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"between {self.low:g} and {self.high:g}"


@dataclass(frozen=True)
class Ranges:
    """One place for the ranges of the edit options: config validation, the engine's check and the sliders."""

    steps: Range
    variations: Range
    guidance: Range
    strength: Range
    grow: Range  # the page's Grow slider (negative shrinks); composite.grow uses its non-negative part
    feather: Range


GUIDANCE_RANGE = Range(0, 20, 0.5)
STRENGTH_RANGE = Range(0.01, 1, 0.01)
GROW_RANGE = Range(-30, 60, 1)
FEATHER_RANGE = Range(0, 60, 1)


@dataclass(frozen=True)
class LimitsConfig:
    """What one request may cost; each is a one-line error past it."""

    points: int = 64  # points and boxes in one selection (each point is work for the segmenter)
    steps: int = 100  # most steps per edit (the Steps slider's maximum)
    variations: int = 8  # most variations per edit
    prompt_chars: int = 1000  # longest prompt, negative prompt or "select by name" query
    json_chars: int = 10_000  # longest JSON text an API call may send (points, box, options)
    json_depth: int = 4  # deepest nesting of that JSON ([[x, y], ...] is 2)

    @property
    def ranges(self) -> Ranges:
        return Ranges(steps=Range(1, self.steps, 1), variations=Range(1, self.variations, 1),
                      guidance=GUIDANCE_RANGE, strength=STRENGTH_RANGE, grow=GROW_RANGE, feather=FEATHER_RANGE)


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    concurrency: int = 1  # model calls at once: each edit runs on a worker pipeline of its own (backends.check_concurrency)
    max_upload_mb: int = 100
    sessions_dir: str = "sessions"  # each session's folder (its history on disk); relative to the working directory
    session_memory_mb: int = 768  # one budget for the pixels all sessions hold in memory; the rest waits on disk
    session_ttl_minutes: int = 1440  # a session unused this long is deleted, memory and folder


@dataclass(frozen=True)
class AutoscalingConfig:
    enabled: bool = False  # false: num_replicas, fixed
    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 1  # requests per replica Serve scales to keep


@dataclass(frozen=True)
class DeploymentConfig:
    """One model kind as a Ray Serve deployment (serving.backend: ray)."""

    num_replicas: int = 1
    autoscaling: AutoscalingConfig = field(default_factory=AutoscalingConfig)
    num_gpus: float = 0  # a fraction shares a GPU (e.g. 0.25 for the segmenter beside the eraser)
    num_cpus: float = 0.5  # what Ray reserves for a replica; the model may use more threads
    max_ongoing_requests: int = 2  # requests one replica runs at once (1 or 2 for a GPU model)
    max_queued_requests: int = 16  # past it a request is refused at once: "busy, try again"


def _deployment(**values: Any) -> Any:
    return field(default_factory=lambda: DeploymentConfig(**values))


@dataclass(frozen=True)
class ServingConfig:
    backend: Literal["local", "ray"] = "local"  # local: the models run in the app | ray: Ray Serve deployments
    ray_address: str = ""  # "": the local Ray instance `python -m editor serve` started | HOST:6379 | ray://HOST:10001
    app_name: str = "photo-editor"  # the Serve application holding the deployments
    request_timeout_s: float = 900  # a model call that takes longer fails in one line
    on_unreachable: Literal["ask", "local", "stop"] = "ask"  # a page whose cluster is down: ask (at a terminal,
    # else stop) | local: run the models in the app instead | stop: exit with the one line
    segmenter: DeploymentConfig = _deployment(max_ongoing_requests=4)
    eraser: DeploymentConfig = _deployment()
    inpainter: DeploymentConfig = _deployment(num_cpus=1, max_ongoing_requests=1)
    detector: DeploymentConfig = _deployment(num_cpus=0.25, max_ongoing_requests=1)
    upscaler: DeploymentConfig = _deployment(num_cpus=0.25, max_ongoing_requests=1)


@dataclass(frozen=True)
class Config:
    device: Device = "auto"
    models_dir: str = "checkpoints"
    auto_download: bool = True  # fetch missing weights (HF_HUB_OFFLINE=1 turns every download off)
    max_image_pixels: int = 50_000_000  # refuse larger images before decoding them
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    eraser: EraserConfig = field(default_factory=EraserConfig)
    inpaint: InpaintConfig = field(default_factory=InpaintConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    upscaler: UpscalerConfig = field(default_factory=UpscalerConfig)
    composite: CompositeConfig = field(default_factory=CompositeConfig)
    erase: EraseConfig = field(default_factory=EraseConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)


_SERVED_KINDS = ("segmenter", "eraser", "inpainter", "detector", "upscaler")
_POSITIVE = {
    "segmenter.embedding_cache_mb", "eraser.max_side", "inpaint.steps", "inpaint.num_images", "inpaint.memory_budget_gb",
    "max_image_pixels", "detector.max_detections", "server.port", "server.concurrency", "server.max_upload_mb",
    "server.session_memory_mb", "server.session_ttl_minutes", "upscaler.tile",
    "limits.points", "limits.steps", "limits.variations", "limits.prompt_chars", "limits.json_chars",
    "limits.json_depth", "serving.request_timeout_s",
    *(f"serving.{kind}.{key}" for kind in _SERVED_KINDS
      for key in ("num_replicas", "max_ongoing_requests", "max_queued_requests", "autoscaling.min_replicas",
                  "autoscaling.max_replicas", "autoscaling.target_ongoing_requests")),
}
_NON_NEGATIVE = {
    "eraser.margin_px", "eraser.grow_px", "upscaler.overlap",
    "inpaint.guidance", "composite.context", "composite.min_context_px",
    "composite.grow", "composite.feather",
    *(f"serving.{kind}.{key}" for kind in _SERVED_KINDS for key in ("num_gpus", "num_cpus")),
}
_UNIT_INTERVAL = {"inpaint.strength", "erase.strength"}
_CLOSED_UNIT_INTERVAL = {"detector.box_threshold", "detector.text_threshold"}
_NOT_BLANK = {"server.sessions_dir"}
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read `path` (YAML; None means defaults only) and apply `key=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for item in overrides or []:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
    config = _build(Config, raw, prefix="")
    _check_ranges(config)
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where else ""
        raise ConfigError(f"config file {path} is not valid YAML{line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{'.'.join(parents[: i + 1])}' is not a section")
        node = child
    node[leaf] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.')}' must be a section of keys")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"unknown config key '{prefix}{key}'")
    values = {}
    for name in fields:
        if name not in raw:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], f"{prefix}{name}.")
        else:
            values[name] = _coerce(f"{prefix}{name}", hint, raw[name])
    return cls(**values)


def _coerce(key: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:  # tuple[str, ...]: a YAML list, or one item
        items = value if isinstance(value, list) else [] if value in (None, "") else [value]
        return tuple(_coerce(f"{key}[{index}]", typing.get_args(hint)[0], item) for index, item in enumerate(items))
    if origin is Literal:
        choices = typing.get_args(hint)
        if isinstance(value, bool) and ("off" if not value else "on") in choices:
            value = "on" if value else "off"  # YAML 1.1 reads a bare off / on as false / true
        if value not in choices:
            raise ConfigError(f"config key '{key}' must be one of {'|'.join(choices)}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be a whole number, got {value!r}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):  # NaN passes every range check below; inf breaks int()
            raise ConfigError(f"config key '{key}' must be a finite number, got {value!r}")
    elif hint is str:
        if value is None or isinstance(value, (dict, list)):
            raise ConfigError(f"config key '{key}' must be text, got {value!r}")
        value = str(value)
    _check_range(key, value)
    return value


def _check_range(key: str, value: Any) -> None:
    if key in _POSITIVE and value <= 0:
        raise ConfigError(f"config key '{key}' must be greater than 0, got {value!r}")
    if key in _NON_NEGATIVE and value < 0:
        raise ConfigError(f"config key '{key}' must not be negative, got {value!r}")
    if key in _UNIT_INTERVAL and not 0 < value <= 1:
        raise ConfigError(f"config key '{key}' must be in (0, 1], got {value!r}")
    if key in _CLOSED_UNIT_INTERVAL and not 0 <= value <= 1:
        raise ConfigError(f"config key '{key}' must be in [0, 1], got {value!r}")
    if key in _NOT_BLANK and not value.strip():
        raise ConfigError(f"config key '{key}' must not be empty")
    if key == "export.jpeg_quality" and not 1 <= value <= 100:
        raise ConfigError(f"config key 'export.jpeg_quality' must be from 1 to 100, got {value!r}")
    if key == "server.port" and value > 65535:
        raise ConfigError(f"config key 'server.port' must be a port number from 1 to 65535, got {value!r}")
    if key == "server.host" and not is_host(value):
        raise ConfigError(f"config key 'server.host' must be an IP address or a host name, got {value!r}")


def is_host(text: str) -> bool:
    """An IPv4 or IPv6 address, or a host name made of letters, digits and hyphens (RFC 1123)."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    if not text or len(text) > 253 or all(label.isdigit() for label in labels):  # 999.1.1.1 is no name
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in labels)


def _check_ranges(config: Config) -> None:
    """The defaults the page shows must fit its sliders, and the engine must accept them."""
    ranges = config.limits.ranges
    checks = [
        ("inpaint.steps", config.inpaint.steps, ranges.steps, " (raise limits.steps for more)"),
        ("inpaint.num_images", config.inpaint.num_images, ranges.variations, " (limits.variations)"),
        ("inpaint.guidance", config.inpaint.guidance, ranges.guidance, ""),
        ("inpaint.strength", config.inpaint.strength, ranges.strength, ""),
        ("erase.strength", config.erase.strength, ranges.strength, ""),
        ("composite.grow", config.composite.grow, Range(0, ranges.grow.high), ""),
        ("composite.feather", config.composite.feather, ranges.feather, ""),
    ]
    for key, value, allowed, hint in checks:
        if value not in allowed:
            raise ConfigError(f"config key '{key}' must be {allowed.describe()}{hint}, got {value!r}")
    for kind in _SERVED_KINDS:
        scaling = getattr(config.serving, kind).autoscaling
        if scaling.enabled and scaling.min_replicas > scaling.max_replicas:
            raise ConfigError(f"config key 'serving.{kind}.autoscaling.min_replicas' ({scaling.min_replicas}) must not "
                              f"exceed max_replicas ({scaling.max_replicas})")
    texts = [("inpaint.negative_prompt", config.inpaint.negative_prompt), ("erase.prompt", config.erase.prompt),
             ("erase.negative_prompt", config.erase.negative_prompt)]
    for key, text in texts:
        if len(text) > config.limits.prompt_chars:
            raise ConfigError(f"config key '{key}' is {len(text)} characters long, over limits.prompt_chars "
                              f"({config.limits.prompt_chars})")
