"""From settings and the registry to working models: which device, and which model of each kind.

Each kind's setting (`segmenter.model`, `eraser.model`, `inpaint.model`, `detector.model`,
`upscaler.model`) is `auto`, a registry name, a local file or folder, or a hub id; `plan_backends`
resolves each to a `Choice` (a registry entry, or a local model described like one, and its
weights on this machine). It only looks: nothing is loaded, and the network is only probed (a few
seconds at most) when a model is missing and downloads are allowed, so `info` stays quick and
honest. `build_engine` hands each entry to its backend's `load` (`registry.loader`); a model that
is missing and may be fetched is fetched when it first loads: the segmenter and the eraser at
start (`Engine.warm_up`, behind the page), the inpainting model at the first generative edit,
the detector at the first "select by name", the upscaler at the first upscale. Without weights
and without a network, the classical fallbacks run (GrabCut, OpenCV, a Lanczos resize), and every
line says why. `check_concurrency` refuses, at start, a `server.concurrency` the loaded models
could not honour.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from editor.core.config import Config
from editor.core.errors import ConfigError
from editor.engine.ops import Backends, Engine
from editor.models import registry, weights
from editor.models.base import Kind, fetch_command
from editor.models.registry import LoadContext, ModelEntry

SETTINGS: dict[Kind, str] = {"segmenter": "segmenter.model", "eraser": "eraser.model",
                             "inpainter": "inpaint.model", "detector": "detector.model", "upscaler": "upscaler.model"}
PLANNED_KINDS: tuple[Kind, ...] = ("segmenter", "eraser", "inpainter", "detector", "upscaler")
KIND_ALIASES = {"inpaint": "inpainter"}  # `download inpaint`, as earlier releases spelled it
GENERATIVE = "generative"  # eraser.model: erase with the inpainting model over an OpenCV pre-fill
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_FILES = (".pth", ".pt", ".safetensors")
# A transformers folder's config.json model_type -> (kind, backend, the backend's options).
_TRANSFORMERS_TYPES: dict[str, tuple[Kind, str, dict[str, Any]]] = {
    "sam2": ("segmenter", "sam2", {"model_type": "sam2"}),
    "sam2_video": ("segmenter", "sam2", {"model_type": "sam2"}),
    "edgetam": ("segmenter", "sam2", {"model_type": "edgetam"}),
    "edgetam_video": ("segmenter", "sam2", {"model_type": "edgetam"}),
    "grounding-dino": ("detector", "detector", {}),
    "mm-grounding-dino": ("detector", "detector", {}),
    "owlv2": ("detector", "detector", {}),
    "owlvit": ("detector", "detector", {}),
}
_FILE_BACKENDS: dict[Kind, tuple[str, str]] = {"segmenter": ("sam", "Segment Anything checkpoint"),
                                               "eraser": ("lama", "LaMa weights"),
                                               "upscaler": ("realesrgan", "Real-ESRGAN weights")}
_HUB_BACKENDS: dict[Kind, str] = {"segmenter": "sam2", "inpainter": "diffusers_inpaint", "detector": "detector"}


@dataclass(frozen=True)
class Choice:
    """What runs one kind: a registry entry (or a local model described as one) and its weights.

    `entry` None means nothing runs (no inpainter, no detector) or, for the eraser, generative
    erase through the inpainting model.
    """

    kind: Kind
    name: str  # the entry's name, "generative", or "none"
    entry: ModelEntry | None
    path: Path | None = None  # the weights on this machine; None: built in, or not here
    fetch: bool = False  # not here but allowed: fetched when it first loads
    why: str = ""  # why a fallback runs instead of the wanted model (one line), or ""
    wanted: str = ""  # the model the settings asked for, when a fallback runs instead
    local: bool = False  # given as a local file or folder

    @property
    def runs(self) -> bool:
        """A model (or a built-in algorithm) will run for this kind."""
        return self.entry is not None and (self.entry.builtin or self.path is not None or self.fetch)


@dataclass(frozen=True)
class Plan:
    device: str
    segmenter: Choice
    eraser: Choice
    inpaint: Choice
    detector: Choice
    upscaler: Choice = Choice("upscaler", "lanczos", registry.get("lanczos"))
    more_inpainters: tuple[Choice, ...] = ()  # inpaint.models: offered beside inpaint.model, per edit

    def choice(self, kind: Kind) -> Choice:
        return {"segmenter": self.segmenter, "eraser": self.eraser, "inpainter": self.inpaint,
                "detector": self.detector, "upscaler": self.upscaler}[kind]


def _a(kind: str) -> str:
    """'a segmenter', 'an eraser'."""
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def resolve_device(setting: str) -> str:
    import torch

    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is available here: use device=auto or device=cpu")
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


@dataclass
class _Network:
    """May a missing model be fetched now? Asked once per server, and only when something is missing."""

    config: Config
    answers: dict[str, str | None] = field(default_factory=dict)

    def why_not(self, entry: ModelEntry | None) -> str | None:
        if weights.offline():
            return "downloads are off: HF_HUB_OFFLINE=1"
        if not self.config.auto_download:
            return "downloads are off: auto_download is false"
        address = weights.source_address(entry)
        host = address.split("/")[2] if "//" in address else address
        if host not in self.answers:
            self.answers[host] = weights.unreachable(address)
        return None if self.answers[host] is None else f"no network: {self.answers[host]}"


def plan_backends(config: Config) -> Plan:
    device = resolve_device(config.device)
    network = _Network(config)
    segmenter = _resolve(config, "segmenter", device, network)
    inpaint = _resolve(config, "inpainter", device, network)
    eraser = _resolve_eraser(config, device, network, inpaint)
    return Plan(device, segmenter, eraser, inpaint, _resolve(config, "detector", device, network),
                _resolve(config, "upscaler", device, network), _resolve_more_inpainters(config, device, network))


def _resolve_more_inpainters(config: Config, device: str, network: _Network) -> tuple[Choice, ...]:
    """inpaint.models, each resolved as inpaint.model would be (a registry name, a folder, a hub id)."""
    choices = []
    for name in dict.fromkeys(config.inpaint.models):
        if name.strip() in ("", config.inpaint.model):
            continue
        try:
            choices.append(_resolve(replace(config, inpaint=replace(config.inpaint, model=name)), "inpainter",
                                    device, network))
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(SETTINGS["inpainter"], "inpaint.models:", 1)) from None
    return tuple(choices)


def setting(config: Config, kind: Kind) -> str:
    section = "inpaint" if kind == "inpainter" else kind
    return str(getattr(config, section).model)


def _resolve(config: Config, kind: Kind, device: str, network: _Network) -> Choice:
    value = setting(config, kind).strip()
    if value == "auto":
        return _auto(config, kind, device, network)
    if value in registry.names():
        return _named(config, kind, registry.get(value), network)
    local = Path(value).expanduser()
    if local.exists():
        return _local(kind, value, local)
    if _is_hub_id(value):
        return _hub(config, kind, value, network)
    raise ConfigError(f"{SETTINGS[kind]} {value!r} is not {_choices(kind)}")


def _choices(kind: Kind) -> str:
    extra = f", {GENERATIVE}" if kind == "eraser" else ""
    local = {"segmenter": "a SAM .pth or a SAM 2.1/EdgeTAM folder", "eraser": "a LaMa .pt/.safetensors file",
             "inpainter": "a diffusers folder", "detector": "a transformers folder",
             "upscaler": "a Real-ESRGAN .pth/.safetensors file"}[kind]
    hub = "" if kind in ("eraser", "upscaler") else ", a hub id (owner/name)"
    return f"auto, {', '.join(registry.names(kind))}{extra}, {local}{hub}"


def _auto(config: Config, kind: Kind, device: str, network: _Network) -> Choice:
    order = [registry.get(name) for name in registry.auto_order(kind, device)]
    for entry in order:
        path = weights.local_path(entry, Path(config.models_dir))
        if path is not None:
            return Choice(kind, entry.name, entry, path)
    why = network.why_not(order[0])
    if why is None:
        return Choice(kind, order[0].name, order[0], fetch=True)
    return _fallback(kind, order[0].name, f"{order[0].name} is not here; {why}")


def _fallback(kind: Kind, wanted: str, why: str) -> Choice:
    name = registry.FALLBACK[kind]
    entry = registry.get(name) if name is not None else None
    return Choice(kind, name or "none", entry, why=why, wanted=wanted)


def _named(config: Config, kind: Kind, entry: ModelEntry, network: _Network) -> Choice:
    if entry.kind != kind:
        raise ConfigError(f"{SETTINGS[kind]} {entry.name} is {_a(entry.kind)}, not {_a(kind)}: choose {_choices(kind)}")
    if entry.builtin:
        return Choice(kind, entry.name, entry)
    path = weights.local_path(entry, Path(config.models_dir))
    if path is not None:
        return Choice(kind, entry.name, entry, path)
    why = network.why_not(entry)
    if why is None:
        return Choice(kind, entry.name, entry, fetch=True)
    return _fallback(kind, entry.name, f"{entry.name} is not here; {why}")


def _local(kind: Kind, value: str, path: Path) -> Choice:
    """A model given as a file or folder, recognised from its files."""
    key = SETTINGS[kind]
    if path.is_file():
        if path.suffix.lower() not in _WEIGHT_FILES or kind not in _FILE_BACKENDS:
            raise ConfigError(f"{key} {value} is a file, but {_a(kind)} is {_choices(kind)}")
        backend, title = _FILE_BACKENDS[kind]
        return _local_choice(kind, path, backend, title, {"model_type": "auto"} if backend == "sam" else {})
    if (path / "model_index.json").is_file():
        found: tuple[Kind, str, dict[str, Any]] = ("inpainter", "diffusers_inpaint", {})
        title = "diffusers inpainting"
    else:
        model_type = _model_type(path / "config.json")
        if model_type not in _TRANSFORMERS_TYPES:
            raise ConfigError(f"{key} {value} is a folder this editor does not recognise (no model_index.json, "
                              f"no config.json with a model_type among {', '.join(_TRANSFORMERS_TYPES)})")
        found, title = _TRANSFORMERS_TYPES[model_type], model_type
    if found[0] != kind:
        raise ConfigError(f"{key} {value} holds {_a(found[0])} ({title}), not {_a(kind)}")
    return _local_choice(kind, path, found[1], title, found[2])


def _local_choice(kind: Kind, path: Path, backend: str, title: str, options: dict[str, Any]) -> Choice:
    entry = ModelEntry(str(path), kind, title, backend, None, 0, "see the model's own licence", options=options)
    return Choice(kind, str(path), entry, path, local=True)


def _model_type(config_json: Path) -> str | None:
    try:
        return str(json.loads(config_json.read_text(encoding="utf-8")).get("model_type"))
    except (OSError, ValueError, AttributeError):
        return None


def _is_hub_id(value: str) -> bool:
    """`owner/name`, not a path: the resolver looks for a local file or folder first."""
    return bool(_HUB_ID.match(value)) and not value.startswith((".", "/", "~")) and not Path(value).expanduser().exists()


def hub_entry(kind: Kind, repo_id: str) -> ModelEntry:
    """The registry's entry for hub repository `repo_id`, or one described from the kind."""
    known = [entry for entry in registry.entries(kind) if entry.source is not None and entry.source.hub == repo_id]
    if known:
        return known[0]
    if kind not in _HUB_BACKENDS:
        raise ConfigError(f"{SETTINGS[kind]} {repo_id!r} is not {_choices(kind)}")
    return ModelEntry(repo_id, kind, repo_id, _HUB_BACKENDS[kind], registry.Source(hub=repo_id), 0,
                      "see the model card")


def _hub(config: Config, kind: Kind, repo_id: str, network: _Network) -> Choice:
    """A hub id: the registry's entry for that repository, or one described from the kind."""
    entry = hub_entry(kind, repo_id)
    if entry in registry.ENTRIES:
        return _named(config, kind, entry, network)
    path = weights.local_path(entry, Path(config.models_dir))
    if path is not None:
        return Choice(kind, repo_id, entry, path)
    why = network.why_not(None)
    if why is None:
        return Choice(kind, repo_id, entry, fetch=True)
    return _fallback(kind, repo_id, f"{repo_id} is not here; {why}")


def _resolve_eraser(config: Config, device: str, network: _Network, inpaint: Choice) -> Choice:
    """auto: LaMa when here (or fetched at start), else generative erase, else OpenCV."""
    value = config.eraser.model.strip()
    if value == GENERATIVE or value == "auto":
        choice = _resolve(config, "eraser", device, network) if value == "auto" else None
        if choice is not None and choice.entry is not None and not choice.entry.builtin:
            return choice
        if inpaint.runs:
            return Choice("eraser", GENERATIVE, None)
        why = choice.why if choice is not None else f"generative erase needs the inpainting model: {inpaint.why}"
        return _fallback("eraser", value, why or "no inpainting model")
    return _resolve(config, "eraser", device, network)


# --------------------------------------------------------------------------- what `info` says


def describe(plan: Plan, config: Config) -> Backends:
    """One line per kind, naming what will really run (or the fallback, and why)."""
    missing = [kind for kind in ("segmenter", "eraser", "inpainter") if plan.choice(kind).why]
    hint = " and ".join(f"`{fetch_command(kind)}`" for kind in missing)
    return Backends(plan.device, _model_line(plan.segmenter, plan.device),
                    _inpainter_line(plan, config), _eraser_line(plan), f"get the models with {hint}" if hint else "",
                    _detector_line(plan, config), upscaler=_upscaler_line(plan, config))


def _where(choice: Choice) -> str:
    if choice.path is not None:
        return f"({choice.path})"
    return f"({choice.entry.source.hub or choice.entry.source.url})" if choice.entry and choice.entry.source else ""


def _model_line(choice: Choice, device: str) -> str:
    entry = choice.entry
    if entry is None:
        return f"none ({choice.why})"
    if choice.local:
        label = _sam_label(choice.path) if entry.backend == "sam" else entry.title
        return f"{label} ({choice.path}) on {device}"
    if entry.builtin:
        return f"{entry.name} ({choice.why or entry.title})"
    return f"{entry.name} {_where(choice)} on {device}" + (" (downloads at start)" if choice.fetch else "")


def _sam_label(path: Path | None) -> str:
    """"sam vit_b" and the like, read from the file; "sam" for a file that cannot be read
    (loading it will fail and say why, and clicks go to GrabCut)."""
    for entry in registry.entries("segmenter"):
        if entry.source is not None and path is not None and path.name == entry.source.filename:
            return f"sam {entry.options['model_type']}"
    from editor.core.errors import EditorError
    from editor.models.sam_loader import infer_architecture, read_checkpoint

    try:
        return f"sam {infer_architecture(read_checkpoint(path)).model_type}"  # type: ignore[arg-type]
    except (EditorError, KeyError, IndexError, ZeroDivisionError):
        return "sam"


def _precision(device: str, config: Config) -> str:
    if device == "cuda":
        return "fp16 + CPU offload on cuda" if config.inpaint.cpu_offload else "fp16 on cuda"
    return "fp32 on cpu"


def _inpainter_line(plan: Plan, config: Config) -> str:
    line = _one_inpainter_line(plan.inpaint, plan.device, config)
    if not plan.inpaint.runs or not plan.more_inpainters:
        return line
    offered = [_one_inpainter_line(choice, plan.device, config) for choice in plan.more_inpainters if choice.runs]
    missing = [f"{choice.wanted or choice.name} ({choice.why})" for choice in plan.more_inpainters if not choice.runs]
    return "; ".join([line, *(f"also {more}" for more in offered), *(f"not offered: {gone}" for gone in missing)])


def _one_inpainter_line(choice: Choice, device: str, config: Config) -> str:
    if not choice.runs:
        return f"none ({choice.why})"
    label = f"diffusers inpainting ({choice.path})" if choice.local else f"{choice.name} inpainting {_where(choice)}"
    later = " (downloads at the first edit)" if choice.fetch else ""
    return f"{label} {_precision(device, config)}{later}"


def _eraser_line(plan: Plan) -> str:
    choice = plan.eraser
    if choice.name == GENERATIVE:
        where = plan.inpaint.path or plan.inpaint.name
        return f"generative: {plan.inpaint.name if not plan.inpaint.local else where} over an OpenCV pre-fill"
    if choice.entry is not None and choice.entry.builtin and choice.name == "opencv":
        return f"opencv telea ({choice.why or 'asked for'})"
    return _model_line(choice, plan.device)


def _detector_line(plan: Plan, config: Config) -> str:
    choice = plan.detector
    if not choice.runs:
        return f"none ({choice.why}; run `{fetch_command('detector')}`)"
    precision = "fp16 on cuda" if plan.device == "cuda" else "fp32 on cpu"
    later = " (downloads at first use)" if choice.fetch else ""
    return (f"{choice.name} {precision}, box threshold {config.detector.box_threshold:g}, "
            f"text threshold {config.detector.text_threshold:g}{later}")


def _plain_resize(choice: Choice) -> bool:
    """The upscaler is the built-in Lanczos (a local file's entry has no source either, but is a model)."""
    return choice.entry is None or (choice.entry.builtin and not choice.local)


def _upscaler_line(plan: Plan, config: Config) -> str:
    choice = plan.upscaler
    if _plain_resize(choice):
        why = choice.why or "asked for"
        return f"lanczos: a plain resize, no upscaling model ({why}; run `{fetch_command('upscaler')}`)"
    label = f"{choice.entry.title} ({choice.path})" if choice.local else f"{choice.name} {_where(choice)}"
    precision = "fp16 on cuda" if plan.device == "cuda" else "fp32 on cpu"
    later = " (downloads at the first upscale)" if choice.fetch else ""
    return f"{label} {precision}, tiles of {config.upscaler.tile} px{later}"


# --------------------------------------------------------------------------- building


def check_concurrency(config: Config, plan: Plan) -> None:
    """Refuse, in one line, more model calls at once than the models can run safely.

    Each concurrent edit gets a worker pipeline of its own over the shared weights, except
    with model CPU offload on CUDA, whose hooks move the one copy of the weights between the
    devices around each call: that leaves one call at a time. The segmenter and the detector
    take one call at a time under a lock, whatever the setting: the others wait, nothing breaks.
    """
    from editor.models.diffusers_inpaint import pipeline_options, sharing_is_safe

    wanted = config.server.concurrency
    if wanted > 1 and plan.inpaint.runs and not sharing_is_safe(pipeline_options(config, plan.device)):
        raise ConfigError(f"server.concurrency={wanted} needs inpaint.cpu_offload=false on cuda (offloading moves "
                          "one shared copy of the model between devices at each call): set inpaint.cpu_offload=false "
                          "if the GPU holds the model, or server.concurrency=1")


def build_model(choice: Choice, config: Config, device: str, description: str, show_progress: bool = True,
                downloads: weights.Downloads | None = None, shared_cache: Any = None) -> Any:
    """The model object for `choice` through its backend's `load`, or None when nothing runs.

    A model that is not here yet is fetched (and verified) when it first loads.
    """
    if not choice.runs or choice.entry is None:
        return None
    fetch = None
    if choice.fetch:
        fetch = functools.partial(_fetch, choice.entry, config, show_progress, downloads)
    context = LoadContext(config, device, show_progress, description, fetch, shared_cache)
    return registry.loader(choice.entry)(choice.entry, choice.path, context)


def build_inpainter(plan: Plan, config: Config, description: str, show_progress: bool = True,
                    downloads: weights.Downloads | None = None) -> Any:
    """inpaint.model's inpainter (None when it cannot run); with inpaint.models, a pool of them that
    share one pipeline cache, so that together they stay under inpaint.memory_budget_gb."""
    more = [choice for choice in plan.more_inpainters if choice.runs]
    if not plan.inpaint.runs or not more:
        return build_model(plan.inpaint, config, plan.device, description, show_progress, downloads)
    from editor.models.diffusers_inpaint import pipeline_cache
    from editor.models.inpaint_pool import InpainterPool

    shared = pipeline_cache(config, plan.device)
    return InpainterPool([build_model(choice, config, plan.device, _one_inpainter_line(choice, plan.device, config),
                                      show_progress, downloads, shared) for choice in (plan.inpaint, *more)])


def _fetch(entry: ModelEntry, config: Config, show_progress: bool, downloads: weights.Downloads | None) -> Path:
    return weights.fetch(entry, Path(config.models_dir), show_progress, downloads=downloads)


def build_engine(config: Config, show_progress: bool = True, downloads: weights.Downloads | None = None) -> Engine:
    """The planned models, ready to load: each loads on first use (or at `Engine.warm_up`), so
    that building the engine takes no time; `downloads` follows the fetches for the page.
    Generative erase needs no eraser of its own: the engine erases through the inpainter then.
    With `serving.backend: ray` the models are the Ray Serve deployments `python -m editor serve` runs.
    """
    if config.serving.backend == "ray":
        from editor.serving.cluster import remote_engine

        return remote_engine(config)
    plan = plan_backends(config)
    backends = describe(plan, config)
    build = functools.partial(build_model, config=config, device=plan.device, show_progress=show_progress,
                              downloads=downloads)
    # The built-in Lanczos is no model: the engine resizes itself, and says so, when it has none.
    return assemble_engine(config, backends, build(plan.segmenter, description=backends.segmenter),
                           inpainter=build_inpainter(plan, config, backends.inpainter, show_progress, downloads),
                           detector=build(plan.detector, description=backends.detector),
                           eraser=None if not served(plan, "eraser") else build(plan.eraser, description=backends.eraser),
                           upscaler=None if not served(plan, "upscaler") else build(plan.upscaler,
                                                                                    description=backends.upscaler))


def served(plan: Plan, kind: Kind) -> bool:
    """Does `kind` need a model object of its own? Not generative erase (the inpainter erases), not the
    built-in Lanczos resize (the engine resizes), not a kind with nothing to run."""
    choice = plan.choice(kind)
    if kind == "eraser" and choice.name == GENERATIVE:
        return False
    if kind == "upscaler" and _plain_resize(choice):
        return False
    return choice.runs


def assemble_engine(config: Config, backends: Backends, segmenter: Any, *, inpainter: Any, detector: Any,
                    eraser: Any, upscaler: Any, priority: Any = None) -> Engine:
    """The engine over these models (in this process or remote), with the settings' defaults and limits."""
    from editor.models.opencv import OpenCvEraser

    return Engine(segmenter, inpainter, backends, config.inpaint, config.composite, config.erase, detector,
                  limits=config.limits, prefill=OpenCvEraser(), eraser=eraser, eraser_config=config.eraser,
                  max_pixels=config.max_image_pixels, upscaler=upscaler, upscaler_config=config.upscaler,
                  priority=priority)


def download_target(what: str, config: Config, device: str) -> ModelEntry:
    """The entry `python -m editor download WHAT` fetches: a registry name, a kind's model as
    configured (a registry name or a hub id; else the kind's default), or a configured hub id."""
    kind = KIND_ALIASES.get(what, what)
    if kind in PLANNED_KINDS:
        value = setting(config, kind)  # type: ignore[arg-type]
        if value in registry.names(kind):  # type: ignore[arg-type]
            return registry.get(value)
        if _is_hub_id(value):
            return hub_entry(kind, value)  # type: ignore[arg-type]
        return registry.get(registry.auto_order(kind, device)[0])  # type: ignore[arg-type]
    for kind in PLANNED_KINDS:  # a hub id the settings name
        if what == setting(config, kind) and _is_hub_id(what):
            return hub_entry(kind, what)
    entry = registry.get(what)
    if entry.builtin:
        raise ConfigError(f"{entry.name} is built in: there is nothing to download")
    return entry
