"""`python -m editor bench`: the engine's speed and memory on the real model architectures.

Speed and memory do not depend on the weights' values, so the released architectures are
built with random weights (`benchmarks.bench_models`) when the real weights are not here, saved
and loaded through the product's own loading code. Each figure stands beside the naive
approach measured in the same run, so that the ratio means something on a noisy machine.
Timings are medians of several runs after a warm-up, with CUDA synchronised around them.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from editor.core import composite
from editor.core import masks
from editor.core.config import load_config
from editor.engine.ops import EditOptions, Engine
from editor.core.prompts import Prompts

SECTIONS = ("sam", "inpaint", "crop", "app", "session", "segment", "erase", "upscale")
SEGMENTERS = ("sam-vit-b", "sam2.1-tiny", "edgetam")  # the segment part's default: the CPU candidates
ERASERS = ("lama", "generative", "opencv")  # the erase part: the dedicated model, SD 2, classical
UPSCALERS = ("realesr-general-x4v3", "realesrgan-x4plus", "lanczos")  # the upscale part: light, heavy, no model
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BenchSettings:
    device: str = "cpu"
    only: tuple[str, ...] = SECTIONS
    quick: bool = False
    sam_model: str = "vit_b"
    inpaint_model: str = "sd2"
    steps: int = 30
    runs: int = 3  # timed runs after the warm-up; the median is reported
    photo: tuple[int, int] = (4000, 3000)  # the SAM and app photo, width x height
    clicks: int = 10
    sessions: int = 10  # the session section: this many sessions, each making `session_edits` edits
    session_edits: int = 30
    models_dir: str = "checkpoints"  # real checkpoints here are used instead of random weights
    segmenters: tuple[str, ...] = SEGMENTERS  # registry names measured by the segment part
    erasers: tuple[str, ...] = ERASERS
    upscalers: tuple[str, ...] = UPSCALERS
    upscale_photo: tuple[int, int] = (1152, 864)  # 1 MP, enlarged x4 (the upscale part)
    # x4plus is ~15 times the work of general-x4v3: on a CPU it is timed on a smaller photo, scaled by pixel count
    heavy_upscale_photo: tuple[int, int] = (192, 144)
    upscale_tile: int = 512
    peak_photo: tuple[int, int] = (4000, 3000)  # 12 MP: the peak memory of tiling it x4
    peak_tiles: int = 3  # tiles run to measure that peak (the rest add output pixels, not memory peaks)

    @classmethod
    def for_run(cls, device: str, only: list[str] | None, quick: bool, **given: Any) -> BenchSettings:
        """The defaults of a full run on `device`, or of `--quick`, then what was given."""
        if quick:
            defaults: dict[str, Any] = dict(sam_model="vit_b", inpaint_model="sd2", steps=2, runs=1, sessions=3,
                                            session_edits=10)
        elif device == "cuda":
            defaults = dict(sam_model="vit_h", inpaint_model="sdxl", steps=30, runs=3)
        else:
            defaults = dict(sam_model="vit_b", inpaint_model="sd2", steps=4, runs=2)
        defaults.update({key: value for key, value in given.items() if value is not None})
        return cls(device=device, only=tuple(only or SECTIONS), quick=quick, **defaults)


@dataclass
class Measurement:
    name: str
    value: float
    unit: str
    settings: dict[str, Any] = field(default_factory=dict)


class Report:
    """The measurements of one run, printed as they come and written as JSON at the end."""

    def __init__(self, machine: str) -> None:
        self.machine = machine
        self.measurements: list[Measurement] = []

    def add(self, name: str, value: float, unit: str, **settings: Any) -> None:
        measurement = Measurement(name, float(value), unit, {"machine": self.machine, **settings})
        self.measurements.append(measurement)
        shown = {k: v for k, v in settings.items() if k not in ("device",)}
        print(f"{name:<34} {_format(value):>12} {unit:<6} {_describe(shown)}", flush=True)

    def get(self, name: str) -> float:
        return next(m.value for m in self.measurements if m.name == name)

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps([vars(m) for m in self.measurements], indent=1) + "\n", encoding="utf-8")


# "sam": model type -> a SAM module; "inpaint": (name, folder) -> the folder, a diffusers model saved there;
# "segmenter": (registry name, folder) -> the transformers folder saved there (SAM 2.1, EdgeTAM);
# "lama": path -> the .safetensors file saved there; "upscaler": (registry name, path) -> the .safetensors saved there.
Builders = dict[str, Callable[..., Any]]


def run(settings: BenchSettings, json_path: Path | None = None, builders: Builders | None = None) -> Report:
    """Measure the sections in `settings.only`; `builders` replaces the model builders (tests)."""
    from benchmarks import bench_models

    builders = {"sam": bench_models.build_sam, "inpaint": bench_models.save_inpaint_pipeline,
                "segmenter": bench_models.save_segmenter, "lama": bench_models.save_lama,
                "upscaler": bench_models.save_upscaler, **(builders or {})}
    report = Report(machine_name(settings.device))
    print(f"machine: {report.machine}\n{'measurement':<34} {'value':>12} unit   settings", flush=True)
    with tempfile.TemporaryDirectory(prefix="editor-bench-") as scratch:
        models = _Models(settings, builders, Path(scratch))
        for section in SECTIONS:
            if section in settings.only:
                {"sam": _bench_sam, "inpaint": _bench_inpaint, "crop": _bench_crop, "app": _bench_app,
                 "session": _bench_session, "segment": _bench_segment,
                 "erase": _bench_erase, "upscale": _bench_upscale}[section](settings, models, report)
    if json_path is not None:
        report.write_json(json_path)
        print(f"wrote {json_path}")
    return report


def machine_name(device: str) -> str:
    cpu = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)} ({cpu})"
    return f"CPU only ({cpu})"


# --- models, real or random ----------------------------------------------------------------


class _Models:
    """The SAM checkpoint and the inpainting folder, real ones when present, else random ones
    saved once to the scratch folder; engines built from them through the product's loader."""

    def __init__(self, settings: BenchSettings, builders: Builders, scratch: Path) -> None:
        self.settings, self.builders, self.scratch = settings, builders, scratch
        self._sam_path: Path | None = None
        self._inpaint_path: Path | None = None
        self._engines: dict[tuple[str, ...], Engine] = {}
        self.sam_source = self.inpaint_source = "random weights"

    def sam_checkpoint(self) -> Path:
        if self._sam_path is None:
            from editor.models import registry, weights

            entry = registry.get("sam-" + self.settings.sam_model.replace("_", "-"))
            real = weights.local_path(entry, Path(self.settings.models_dir))
            if real is not None:
                self._sam_path, self.sam_source = real, f"checkpoint {real.name}"
            else:
                self._sam_path = self.scratch / f"sam_{self.settings.sam_model}.pth"
                torch.save(self.builders["sam"](self.settings.sam_model).state_dict(), self._sam_path)
        return self._sam_path

    def inpaint_folder(self) -> Path | str:
        if self._inpaint_path is None:
            from editor.models import registry, weights

            name = self.settings.inpaint_model
            entry = registry.get(name)
            if weights.local_path(entry, Path(self.settings.models_dir)) is not None:
                self.inpaint_source = f"weights {entry.source.hub}"  # type: ignore[union-attr]
                return name  # the registry's model, loaded exactly as the product loads it
            self._inpaint_path = self.builders["inpaint"](name, self.scratch / name)
        return self._inpaint_path

    def engine(self, *overrides: str, sam: bool = False, inpaint: bool = False) -> Engine:
        """An engine on the bench's device; one per distinct set of settings, loaded lazily."""
        from editor.build import build_engine

        settings = [f"device={self.settings.device}", f"models_dir={self.scratch / 'none'}", "auto_download=false",
                    f"inpaint.steps={self.settings.steps}", "inpaint.strength=1.0", *overrides]
        if sam:
            settings.append(f"segmenter.model={self.sam_checkpoint()}")
        if inpaint:
            settings.append(f"inpaint.model={self.inpaint_folder()}")
        key = tuple(settings)
        if key not in self._engines:
            self._engines[key] = build_engine(load_config(None, settings), show_progress=False)
        return self._engines[key]

    def weights(self, name: str) -> tuple[Path, str]:
        """The weights of registry model `name` and where they come from: the real ones when on this
        machine, else the released architecture with random weights saved once to the scratch folder."""
        from editor.models import registry, weights

        entry = registry.get(name)
        real = weights.local_path(entry, Path(self.settings.models_dir))
        if real is not None:
            return real, f"weights {entry.source.hub or real.name}"  # type: ignore[union-attr]
        return self._random_weights(name, entry.backend), "random weights"

    def _random_weights(self, name: str, backend: str) -> Path:
        path = self.scratch / "random" / name
        if backend == "sam":
            path = path.with_suffix(".pth")
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(self.builders["sam"](registry_model_type(name)).state_dict(), path)
        elif backend == "lama":
            path = path.with_suffix(".safetensors")
            if not path.is_file():
                self.builders["lama"](path)
        elif backend == "realesrgan":
            path = path.with_suffix(".safetensors")
            if not path.is_file():
                self.builders["upscaler"](name, path)
        elif not path.is_dir():
            self.builders["segmenter"](name, path)
        return path

    def model(self, name: str) -> Any:
        """Registry model `name`, built by its backend's own `load` from its weights' path and loaded."""
        from editor.models import registry
        from editor.models.registry import LoadContext

        entry = registry.get(name)
        path = None if entry.builtin else self.weights(name)[0]
        config = load_config(None, [f"device={self.settings.device}", f"models_dir={self.scratch / 'none'}",
                                    "auto_download=false"])
        model = registry.loader(entry)(entry, path, LoadContext(config, self.settings.device, show_progress=False))
        model.load()
        if getattr(model, "load_error", None):
            raise RuntimeError(f"{name} did not load: {model.load_error}")
        return model

    def release(self) -> None:
        """Drop the engines (and their loaded models) built so far."""
        self._engines.clear()
        _free(self.settings.device)


def registry_model_type(name: str) -> str:
    """segment-anything's model type (vit_b, vit_l, vit_h) of registry segmenter `name`."""
    from editor.models import registry

    return str(registry.get(name).options["model_type"])


# --- SAM --------------------------------------------------------------------------------------


def _bench_sam(settings: BenchSettings, models: _Models, report: Report) -> None:
    from segment_anything import SamPredictor

    engine = models.engine(sam=True)
    segmenter = engine.segmenter
    model = segmenter.model  # type: ignore[attr-defined]
    encoder_runs = _count_calls(model.image_encoder)
    photo = synthetic_photo(*settings.photo)
    common = dict(model=settings.sam_model, weights=models.sam_source, photo=_size(photo), device=settings.device)

    variants = [photo.copy() for _ in range(settings.runs + 1)]
    for v, variant in enumerate(variants):
        variant[0, 0, 0] = v  # a new version of the photo each time: no embedding is cached
    encode = _median_after_warmup([lambda im=im: engine.prepare(im) for im in variants])
    report.add("sam_encode_ms", encode * 1000, "ms", **common)

    frozen = photo.copy()
    frozen.flags.writeable = False  # as the session stores each version
    engine.prepare(frozen)
    encoder_runs[0] = 0
    clicks = click_sequence(frozen, settings.clicks)
    times = [_timed(lambda p=p: engine.select(frozen, p)) for p in clicks]
    report.add("sam_click_ms", statistics.median(times[1:] or times) * 1000, "ms",
               note="median of clicks 2..N, each adding a point", **common)
    report.add("sam_first_click_ms", times[0] * 1000, "ms", **common)
    report.add("sam_encoder_runs_per_10_clicks", 1 + encoder_runs[0], "runs", clicks=settings.clicks,
               way="engine: embedding on upload, then cached", **common)
    report.add(f"sam_{settings.clicks}_clicks_s", encode + sum(times), "s",
               way="engine: one embedding, then the clicks", **common)

    # The naive app: a fresh predictor per click, so set_image runs every time.
    naive_clicks = settings.clicks if not settings.quick else min(3, settings.clicks)
    encoder_runs[0] = 0
    naive_times = []
    for prompts in clicks[:naive_clicks]:
        def naive(p: Prompts = prompts) -> None:
            predictor = SamPredictor(model)
            predictor.set_image(photo)
            predictor.predict(np.array(p.points), np.array(p.labels), multimask_output=False)
        naive_times.append(_timed(naive))
    scale = settings.clicks / naive_clicks
    extra = {"clicks_measured": naive_clicks} if naive_clicks != settings.clicks else {}
    report.add("sam_encoder_runs_per_10_clicks_naive", encoder_runs[0] * 10 / naive_clicks, "runs",
               way="re-embed on every click", **extra, **common)
    report.add(f"sam_{settings.clicks}_clicks_naive_s", sum(naive_times) * scale, "s",
               way="re-embed on every click", **extra, **common)


def click_sequence(image: np.ndarray, count: int) -> list[Prompts]:
    """A person's clicks, each adding a point (every fourth one negative), around the centre."""
    height, width = image.shape[:2]
    prompts, sequence = Prompts(), []
    for i in range(count):
        prompts = prompts.add_point(width * (0.35 + 0.03 * i), height * (0.45 + 0.01 * i), positive=i % 4 != 3)
        sequence.append(prompts)
    return sequence


# --- inpainting -------------------------------------------------------------------------------


def _bench_inpaint(settings: BenchSettings, models: _Models, report: Report) -> None:
    photo, mask, common = _bench_inpaint_speed(settings, models, report)
    _bench_inpaint_memory(settings, models, report, photo, mask, common)


def _bench_inpaint_speed(settings: BenchSettings, models: _Models,
                         report: Report) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    engine = models.engine(inpaint=True)
    native = engine.inpainter.native_size  # type: ignore[union-attr]
    photo = synthetic_photo(native, native)
    mask = centre_mask(photo, 0.25)
    common = dict(model=settings.inpaint_model, weights=models.inpaint_source, steps=settings.steps,
                  size=f"{native}x{native}", device=settings.device, precision=_precision(settings.device))
    load = _timed(engine.warm_up)
    report.add("inpaint_load_s", load, "s", note="weights are memory-mapped: they page in during the first edit",
               **common)
    steps: list[float] = []

    def fill() -> None:
        stamps = [time.perf_counter()]
        engine.fill(photo, mask, "a red ball", EditOptions(seed=1), progress=lambda done, total: stamps.append(
            _synchronized_clock()))
        steps.extend(np.diff(stamps[1:]).tolist())

    total = _median_after_warmup([fill] * (settings.runs + 1))
    report.add("inpaint_s", total, "s", note="end to end, prompt to pasted result", **common)
    report.add("inpaint_step_s", statistics.median(steps) if steps else total / settings.steps, "s", **common)
    return photo, mask, common


def _bench_inpaint_memory(settings: BenchSettings, models: _Models, report: Report, photo: np.ndarray,
                          mask: np.ndarray, common: dict[str, Any]) -> None:
    """Peak memory of one fill, one pipeline loaded at a time: RSS on the CPU (the whole
    process: weights, activations, and SAM if loaded), allocated GPU memory on CUDA."""
    models.release()
    options = [("inpaint.cpu_offload=true", "inpaint.vae_tiling=true"),
               ("inpaint.cpu_offload=true", "inpaint.vae_tiling=false")]
    if settings.device == "cuda":  # offload only exists on CUDA
        options += [("inpaint.cpu_offload=false", "inpaint.vae_tiling=true")]
    for overrides in options:
        engine = models.engine(*overrides, inpaint=True)
        engine.warm_up()
        with _peak_memory(settings.device) as peak:
            engine.fill(photo, mask, "a red ball", EditOptions(seed=1, steps=min(settings.steps, 2)))
        offload = overrides[0].endswith("true") and settings.device == "cuda"
        name = "inpaint_peak_gpu_gb" if settings.device == "cuda" else "inpaint_peak_rss_gb"
        report.add(name, peak[0] / 2**30, "GiB", cpu_offload=offload, vae_tiling=overrides[1].endswith("true"),
                   **common)
        models.release()  # before the next variant loads its own pipeline


# --- the crop strategy ------------------------------------------------------------------------


def _bench_crop(settings: BenchSettings, models: _Models, report: Report) -> None:
    """The same small object in a 1- and a 24-megapixel photo, with the engine's crop and
    with the naive whole-photo resize; time, and fidelity outside the edit."""
    engine = models.engine(inpaint=True)
    engine.warm_up()
    common = dict(model=settings.inpaint_model, weights=models.inpaint_source, steps=settings.steps,
                  device=settings.device)
    seconds: dict[str, float] = {}
    for label, (width, height) in (("1mp", (1152, 864)), ("24mp", (6000, 4000))):
        photo = synthetic_photo(width, height)
        mask = object_mask(photo, 200, 150)
        outside = masks.grow(mask, engine.composite.grow + engine.composite.feather) == 0
        crop = lambda: engine.fill(photo, mask, "a red ball", EditOptions(seed=1)).images[0]  # noqa: E731
        # One warm-up for the whole section: the model's work size is the same for both photos.
        first = label == "1mp"
        seconds[label], result = _median_with_result([crop] * (settings.runs + first), warm_up=first)
        report.add(f"crop_{label}_s", seconds[label], "s", photo=_size(photo), way="engine: crop around the edit",
                   **common)
        report.add(f"crop_{label}_exact_outside", _exact_share(result, photo, outside), "share",
                   photo=_size(photo), way="engine: crop around the edit", **common)
        naive_time, naive = _median_with_result([lambda: whole_photo_fill(engine, photo, mask)] * settings.runs,
                                                warm_up=False)
        seconds[f"naive_{label}"] = naive_time
        report.add(f"naive_{label}_s", naive_time, "s", photo=_size(photo), way="whole photo resized to native size",
                   **common)
        report.add(f"naive_{label}_exact_outside", _exact_share(naive, photo, outside), "share",
                   photo=_size(photo), way="whole photo resized to native size", **common)
        report.add(f"naive_{label}_psnr_outside", psnr(naive[outside], photo[outside]), "dB",
                   photo=_size(photo), way="whole photo resized to native size", **common)
    report.add("crop_24mp_over_1mp", seconds["24mp"] / seconds["1mp"], "ratio", way="engine", **common)
    report.add("naive_24mp_over_1mp", seconds["naive_24mp"] / seconds["naive_1mp"], "ratio",
               way="whole photo resized", **common)


def whole_photo_fill(engine: Engine, photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What many notebooks do: the whole photo resized to the model's size, and its output
    resized back as the result (every pixel passes through the model and two resizes)."""
    from editor.models.base import InpaintRequest

    height, width = photo.shape[:2]
    work_w, work_h = composite.model_size(width, height, engine.inpainter.native_size)  # type: ignore[union-attr]
    small = composite.resize_image(photo, work_w, work_h)
    small_mask = composite.resize_mask(mask, work_w, work_h)
    request = InpaintRequest("a red ball", "", engine.defaults.steps, 7.5, 1.0, 1)
    output = engine.inpainter.inpaint(small, small_mask, request)[0]  # type: ignore[union-attr]
    return composite.resize_image(output, width, height)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if error == 0 else 10 * np.log10(255.0**2 / error)


def _exact_share(result: np.ndarray, photo: np.ndarray, outside: np.ndarray) -> float:
    return float(np.all(result[outside] == photo[outside], axis=-1).mean())


# --- the app ----------------------------------------------------------------------------------


def _bench_app(settings: BenchSettings, models: _Models, report: Report) -> None:
    """Start-up to a served page (the real `python app.py`), and upload to first mask."""
    overrides = [f"device={settings.device}", f"segmenter.model={models.sam_checkpoint()}",
                 f"inpaint.model={models.inpaint_folder()}", f"models_dir={models.scratch / 'none'}",
                 f"server.sessions_dir={models.scratch / 'app-sessions'}"]
    common = dict(sam=settings.sam_model, inpaint=settings.inpaint_model, device=settings.device)
    starts = [_startup_seconds(overrides) for _ in range(max(1, min(settings.runs, 2)))]
    report.add("app_startup_s", statistics.median(starts), "s", note="python app.py to a served page", **common)
    report.add("app_first_mask_s", _first_mask_seconds(settings, models), "s",
               note="upload, embedding, first click, canvas", photo=f"{settings.photo[0]}x{settings.photo[1]}", **common)


def _startup_seconds(overrides: list[str]) -> float:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, str(ROOT / "app.py"), "--port", str(port)]
    for item in overrides:
        command += ["--set", item]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - started < 300 and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the app did not serve its page")
    finally:
        process.terminate()
        process.wait(timeout=60)


def _first_mask_seconds(settings: BenchSettings, models: _Models) -> float:
    """The page's own handlers: upload a PNG, prepare (embed), click, draw the canvas."""
    import gradio as gr

    import shutil

    from editor.core.photo_io import save_png
    from editor.session.store import SessionStore
    from editor.ui.handlers import Handlers
    from editor.ui.uploads import upload_folder

    engine = models.engine(sam=True)
    engine.segmenter.load()  # loaded in the background at start-up, before any upload
    store = SessionStore(models.scratch / "first-mask-sessions", 256 * 2**20, ttl_seconds=3600)
    handlers = Handlers(engine, load_config(None, [f"device={settings.device}"]), [], store)
    upload_folder().mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=upload_folder())) / "upload.png"  # where Gradio puts an upload
    photo = synthetic_photo(*settings.photo)
    photo[0, 0] = 7  # a photo not embedded before
    save_png(photo, path)
    session = handlers.new_session()
    x, y = click_sequence(photo, 1)[0].points[0]

    def first_mask() -> None:
        handlers.upload(session, {"path": str(path), "orig_name": path.name})
        handlers.prepare(session)
        handlers.click(session, "add", gr.SelectData(None, {"index": [int(x), int(y)], "value": None, "selected": True}))

    try:
        return _timed(first_mask)
    finally:
        shutil.rmtree(path.parent)


# --- segmenters and erasers of the model layer --------------------------------------------------

FIRST_MASK_GOAL_S = 1.0  # CPU goals on the 2-core development machine (issue 10)
CLICK_GOAL_MS = 50.0
LAMA_ERASE_GOAL_S = 3.0
ERASE_OBJECT = (200, 150)  # the object erased in the 12 MP photo, width x height


def _bench_segment(settings: BenchSettings, models: _Models, report: Report) -> None:
    """Per segmenter, through the product's own object (the registry's loader, by path):
    `first_mask_s`, a new photo's `prepare` (the embedding) and its first click's full-size mask,
    end to end; `click_ms`, a further click on the prepared photo, refining the previous one."""
    photo = synthetic_photo(*settings.photo)
    clicks = click_sequence(photo, max(settings.clicks, 2))
    for name in settings.segmenters:
        segmenter = models.model(name)
        common = dict(model=name, weights=models.weights(name)[1], photo=_size(photo), device=settings.device)
        variants = [photo.copy() for _ in range(settings.runs + 1)]
        for v, variant in enumerate(variants):
            variant[0, 0, 0] = 255 - v  # a photo not prepared before: nothing cached
            variant.flags.writeable = False  # as the session stores each version

        def first_mask(image: np.ndarray) -> Any:
            return segmenter.segment(segmenter.prepare(image), clicks[0])

        seconds, result = _median_with_result([lambda im=im: first_mask(im) for im in variants])
        assert result.mask.shape == photo.shape[:2], "the mask is the photo's size"
        report.add("first_mask_s", seconds, "s", note="prepare (embedding) + first click's full-size mask",
                   goal_cpu_s=FIRST_MASK_GOAL_S, **common)
        ref, previous, times = segmenter.prepare(variants[-1]), result.logits, []
        for prompts in clicks[1:]:
            started = _synchronized_clock()
            previous = segmenter.segment(ref, prompts, previous).logits
            times.append(_synchronized_clock() - started)
        report.add("click_ms", statistics.median(times) * 1000, "ms", clicks=len(times),
                   note="a further click on the prepared photo, median", goal_cpu_ms=CLICK_GOAL_MS, **common)
        del segmenter
        _free(settings.device)


def _bench_erase(settings: BenchSettings, models: _Models, report: Report) -> None:
    """`erase_12mp_s` per eraser: a 200x150 object in a 12 MP photo, the engine's erase (the
    eraser on a crop around the object, pasted back exact), all measured in the same run."""
    photo = synthetic_photo(4000, 3000)
    mask = object_mask(photo, *ERASE_OBJECT)
    for name in settings.erasers:
        engine, common = _erase_engine(name, settings, models)
        seconds, result = _median_with_result([lambda: engine.erase(photo, mask, EditOptions(seed=1))]
                                              * (settings.runs + 1))
        outside = masks.grow(mask, 64) == 0
        extra = {"goal_cpu_s": LAMA_ERASE_GOAL_S} if name == "lama" else {}
        report.add("erase_12mp_s", seconds, "s", photo=_size(photo), object=f"{ERASE_OBJECT[0]}x{ERASE_OBJECT[1]}",
                   exact_outside=_exact_share(result.images[0], photo, outside), erased_by=engine.status().eraser,
                   **extra, **common)
        models.release()


def _erase_engine(name: str, settings: BenchSettings, models: _Models) -> tuple[Engine, dict[str, Any]]:
    """An engine whose erase uses eraser `name`: lama (its weights by path), generative (SD 2
    inpainting at the bench's steps), or opencv."""
    common: dict[str, Any] = dict(model=name, device=settings.device)
    if name == "generative":
        common.update(model=f"generative ({settings.inpaint_model})", steps=settings.steps)
        engine = models.engine("eraser.model=generative", inpaint=True)
        common["weights"] = models.inpaint_source
    elif name == "opencv":
        engine = models.engine("eraser.model=opencv")
    else:
        path, common["weights"] = models.weights(name)
        engine = models.engine(f"eraser.model={path}")
    engine.warm_up()
    return engine, common


# --- upscaling --------------------------------------------------------------------------------


def _bench_upscale(settings: BenchSettings, models: _Models, report: Report) -> None:
    """`upscale_x4_1mp_s` per upscaler: the engine's tiled x4 of a 1 MP photo, each model beside the
    Lanczos resize it replaces, in the same run; then the peak memory of tiling a 12 MP photo x4."""
    for name in settings.upscalers:
        heavy = name == "realesrgan-x4plus" and settings.device == "cpu"
        width, height = settings.heavy_upscale_photo if heavy else settings.upscale_photo
        photo = synthetic_photo(width, height)
        engine, common = _upscale_engine(name, settings, models)
        # warmed up at load (a small forward): a 1 MP x4 on a CPU takes minutes, each run counts
        seconds, result = _median_with_result([lambda: engine.upscale(photo, 4)] * settings.runs, warm_up=False)
        assert result.images[0].shape == (height * 4, width * 4, 3)
        per_mp = seconds * 1e6 / (width * height)
        scaled = {} if abs(width * height - 1e6) < 1e5 else {"measured": f"{seconds:.3g} s on {width}x{height}, "
                                                                          "scaled by pixel count"}
        tiles = {} if name == "lanczos" else {"tiles": len(_tiles(photo, settings.upscale_tile))}
        report.add("upscale_x4_1mp_s", per_mp, "s", photo=_size(photo), upscaled_by=result.metadata["model"],
                   **tiles, **scaled, **common)
        models.release()
    if "realesr-general-x4v3" in settings.upscalers:
        _bench_upscale_peak(settings, models, report)


def _upscale_engine(name: str, settings: BenchSettings, models: _Models) -> tuple[Engine, dict[str, Any]]:
    common: dict[str, Any] = dict(model=name, device=settings.device, tile=settings.upscale_tile,
                                  max_image_pixels=10**9)
    overrides = [f"upscaler.tile={settings.upscale_tile}", "max_image_pixels=1000000000"]
    if name == "lanczos":
        return models.engine("upscaler.model=lanczos", *overrides), common
    path, common["weights"] = models.weights(name)
    common["precision"] = _precision(settings.device)
    engine = models.engine(f"upscaler.model={path}", *overrides)
    engine.warm_up(upscaler=True)
    return engine, common


def _bench_upscale_peak(settings: BenchSettings, models: _Models, report: Report) -> None:
    """The peak memory of tiling a 12 MP photo x4 with general-x4v3: the first `peak_tiles` tiles are run
    (the whole photo takes many minutes on a CPU), then the run is cancelled. Tiles are alike, so the
    working set they reach is the run's; what the other tiles add is their part of the output array
    (allocated at once, its pages filled tile by tile), added to give the full run's peak."""
    import threading

    from editor.core.errors import EditCancelled
    from editor.engine import strategy

    width, height = settings.peak_photo
    photo = synthetic_photo(width, height)
    model = models.model("realesr-general-x4v3")
    tile, overlap = settings.upscale_tile, load_config(None, []).upscaler.overlap
    boxes = _tiles(photo, tile)
    cancel = threading.Event()
    started = [0.0]

    def stop_after(done: int, _total: int) -> None:
        if done == 1:
            started[0] = _synchronized_clock()  # the first tile also warms up
        if done == min(settings.peak_tiles, len(boxes)):
            cancel.set()

    _free(settings.device)
    with _peak_memory(settings.device) as peak:
        try:
            strategy.upscale_tiled(photo, model.upscale, 4, tile, overlap, progress=stop_after, cancel=cancel)
        except EditCancelled:
            pass
    ran = min(settings.peak_tiles, len(boxes))
    per_tile = (_synchronized_clock() - started[0]) / max(1, ran - 1)
    written = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes[:ran]) * 16 * 3
    output = width * height * 16 * 3
    report.add("upscale_12mp_peak_rss_gb" if settings.device == "cpu" else "upscale_12mp_peak_gpu_gb",
               (peak[0] + (output - written if settings.device == "cpu" else 0)) / 2**30, "GiB",
               photo=_size(photo), model="realesr-general-x4v3", tile=tile, overlap=overlap, tiles=len(boxes),
               measured=f"peak {peak[0] / 2**30:.2f} GiB over the first {ran} tiles"
                        + (f" + {(output - written) / 2**30:.2f} GiB of output the other tiles fill"
                           if settings.device == "cpu" else " (the output array lives in host memory)"),
               projected_full_run_s=round(per_tile * len(boxes)), device=settings.device)
    models.release()


def _tiles(photo: np.ndarray, tile: int) -> list[tuple[int, int, int, int]]:
    from editor.engine import strategy

    return strategy.tile_boxes(photo.shape[1], photo.shape[0], tile)


# --- sessions ---------------------------------------------------------------------------------

SESSION_PHOTO = (6000, 4000)  # 24 MP
SESSION_PATCH = 300  # the side of the square each small edit changes
TODAY_VERSIONS = 30  # today's design kept this many full copies per session


def _bench_session(settings: BenchSettings, models: _Models, report: Report) -> None:
    """Pixel bytes held in memory by sessions that each made small edits on a 24 MP photo: the
    session store (deltas on disk, one budget) beside today's design (a full read-only copy per
    version), measured in the same run; the time of an edit's commit, and of reading an old
    version back from disk, with every version of the first session checked bit for bit."""
    from editor.core.config import ServerConfig
    from editor.session.store import SessionStore

    photo = synthetic_photo(*SESSION_PHOTO)
    count, edits = settings.sessions, settings.session_edits
    budget_mb = ServerConfig().session_memory_mb
    name = f"session_bytes_{count}x{edits}_{round(photo.size / 3 / 1e6)}mp"
    common = dict(photo=_size(photo), sessions=count, edits=edits, patch=f"{SESSION_PATCH}x{SESSION_PATCH}")
    store = SessionStore(models.scratch / "sessions", budget_mb * 2**20, ttl_seconds=3600)
    commits: list[float] = []
    first_id = ""
    for index in range(count):
        session = store.create()
        first_id = first_id or session.id
        session.open(photo, f"photo-{index}")
        for edit in range(edits):
            image = session.image.copy()
            _paint_patch(image, edit)
            started = time.perf_counter()
            session.commit(image, "fill: bench", {"edit": str(edit)}, session.version.number)
            commits.append(time.perf_counter() - started)
    report.add(name, store.bytes_in_memory() / 2**30, "GiB", way="session store: deltas on disk, one budget",
               budget_mb=budget_mb, **common)
    report.add("session_commit_24mp_s", statistics.median(commits), "s",
               note="an edit's result saved: diff, thumbnail, .npy write, index", **common)
    reads, exact = _read_back(store, first_id, photo, edits)
    report.add("session_read_back_24mp_s", statistics.median(reads), "s",
               note="a version rebuilt from the session's folder, nothing of it in memory", **common)
    report.add("session_read_back_exact", exact, "share", note="versions of one session equal to what was committed",
               **common)
    store.delete(first_id)
    report.add(f"{name}_naive", sum(_today_design_bytes(photo, edits) for _ in range(count)) / 2**30, "GiB",
               way=f"today's design: {TODAY_VERSIONS} full read-only copies per session",
               note="built one session at a time; their sum is what the live sessions hold", **common)
    _bench_ui_overhead(photo, models, report, store)


def _bench_ui_overhead(photo: np.ndarray, models: _Models, report: Report, store: Any) -> None:
    """An edit's wall time in the page's handler minus the engine's (model) time, on a 24 MP photo
    with 30 versions in the history; beside the work today's design did in the queue per edit
    (every thumbnail from a full copy, the download PNG at zlib level 6, a full copy), same run."""
    from editor.core.display import display_scale
    from editor.ui import views
    from editor.core.photo_io import encode_png
    from editor.ui.handlers import Handlers, canvas_view, compare_view

    engine = models.engine()  # no weights: the classical erase stands for the model
    handlers = Handlers(engine, load_config(None, ["device=cpu"]), [], store)
    session = handlers.new_session()
    session.open(photo, "bench")
    for edit in range(TODAY_VERSIONS - 1):
        image = session.image.copy()
        _paint_patch(image, edit)
        session.commit(image, "fill: bench", {}, session.version.number)
    engine_seconds: list[float] = []
    erase = engine.erase

    def timed_erase(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return erase(*args, **kwargs)
        finally:
            engine_seconds.append(time.perf_counter() - started)

    engine.erase = timed_erase  # type: ignore[method-assign]  # this bench's own engine
    selected = np.zeros(photo.shape[:2], bool)
    selected[1800:2100, 2800:3300] = True
    session.paint(selected, None)
    started = time.perf_counter()
    handlers.edit("erase", session, "", "", 2, 7.5, 1.0, 7, 1, progress=lambda *a, **k: None)
    wall = time.perf_counter() - started
    common = dict(photo=_size(photo), versions=len(session.versions), edit="erase 300x500 (classical)")
    report.add("ui_overhead_24mp_s", wall - engine_seconds[-1], "s", way="history of deltas, thumbnails made once, "
               "PNG made after the edit outside the queue", **common)
    started = time.perf_counter()
    handlers.download(session)
    report.add("download_png_24mp_s", time.perf_counter() - started, "s",
               note="zlib level 1, chained after the edit outside the model queue", **common)

    def today() -> None:  # what today's handler did per edit, on full copies, inside the queue
        full = [np.array(session.image_of(v.number), copy=True) for v in session.versions]
        started = time.perf_counter()
        np.array(full[-1], copy=True)
        for image in full:
            views.downscale(image, display_scale(image.shape[1], image.shape[0], 160))
        encode_png(full[-1])
        canvas_view(session, session.selection_mask(engine.select))
        compare_view(session)
        today_seconds.append(time.perf_counter() - started)

    today_seconds: list[float] = []
    today()
    report.add("ui_overhead_24mp_s_naive", today_seconds[-1], "s", way="today's design: 30 thumbnails from full "
               "copies, the PNG at level 6 and a full copy, per edit, in the queue", **common)


def _paint_patch(image: np.ndarray, edit: int) -> None:
    """Edit number `edit`: every pixel of one square changed, at a place of its own."""
    height, width = image.shape[:2]
    x = (edit * 997) % (width - SESSION_PATCH)
    y = (edit * 613) % (height - SESSION_PATCH)
    np.bitwise_xor(image[y:y + SESSION_PATCH, x:x + SESSION_PATCH], 0x55,
                   out=image[y:y + SESSION_PATCH, x:x + SESSION_PATCH])


def _read_back(store: Any, session_id: str, photo: np.ndarray, edits: int) -> tuple[list[float], float]:
    """Time rebuilding each version of one session from its folder alone (nothing of it left in
    memory: the worst case), and the share that equals the image committed."""
    session = store.get(session_id)
    expected = photo.copy()
    times, equal = [], 0
    for number in range(1, edits + 2):
        if number > 1:
            _paint_patch(expected, number - 2)
        session.drop_cached_pixels()
        started = time.perf_counter()
        image = session.image_of(number)
        times.append(time.perf_counter() - started)
        equal += int(np.array_equal(image, expected))
    return times, equal / (edits + 1)


def _today_design_bytes(photo: np.ndarray, edits: int) -> int:
    """Today's design, reproduced: each version a full read-only copy, the newest 30 kept (the
    original stays); the bytes its versions hold."""
    def frozen_copy(image: np.ndarray) -> np.ndarray:
        copy = np.array(image, order="C", copy=True)
        copy.flags.writeable = False
        return copy

    versions = [frozen_copy(photo)]
    for edit in range(edits):
        image = versions[-1].copy()
        _paint_patch(image, edit)
        versions.append(frozen_copy(image))
        if len(versions) > TODAY_VERSIONS:
            del versions[1]
    return sum(version.nbytes for version in versions)


# --- helpers ----------------------------------------------------------------------------------


def synthetic_photo(width: int, height: int) -> np.ndarray:
    """A smooth gradient with noise: PNG-compressible like a photo, not constant."""
    rng = np.random.default_rng(0)
    ramp_x = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    ramp_y = np.linspace(0, 55, height, dtype=np.float32)[:, None, None]
    noise = rng.integers(0, 16, (height, width, 1), dtype=np.uint8)
    image = ramp_x + ramp_y + np.array([0, 30, 60], np.float32) + noise
    return np.clip(image, 0, 255).astype(np.uint8)


def object_mask(photo: np.ndarray, width: int, height: int) -> np.ndarray:
    """An ellipse of `width` x `height` pixels at the photo's centre."""
    import cv2

    mask = np.zeros(photo.shape[:2], np.uint8)
    centre = (photo.shape[1] // 2, photo.shape[0] // 2)
    cv2.ellipse(mask, centre, (width // 2, height // 2), 0, 0, 360, 255, -1)
    return mask


def centre_mask(photo: np.ndarray, share: float) -> np.ndarray:
    height, width = photo.shape[:2]
    return object_mask(photo, int(width * share ** 0.5 * 1.2), int(height * share ** 0.5 * 1.2))


def _count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _synchronized_clock() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def _timed(work: Callable[[], Any]) -> float:
    started = _synchronized_clock()
    work()
    return _synchronized_clock() - started


def _median_after_warmup(works: list[Callable[[], Any]]) -> float:
    return _median_with_result(works)[0]


def _median_with_result(works: list[Callable[[], Any]], warm_up: bool = True) -> tuple[float, Any]:
    """Run the first as a warm-up (unless told not to), time the rest; the median time and the
    last result."""
    result = works[0]() if warm_up else None
    times = []
    for work in (works[1:] if warm_up else works) or works[:1]:
        started = _synchronized_clock()
        result = work()
        times.append(_synchronized_clock() - started)
    return statistics.median(times), result


@contextmanager
def _peak_memory(device: str) -> Iterator[list[float]]:
    """The peak memory in bytes while the block runs (allocated on CUDA, resident on the CPU)."""
    peak = [0.0]
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        yield peak
        torch.cuda.synchronize()
        peak[0] = torch.cuda.max_memory_allocated()
        return
    _reset_peak_rss()
    yield peak
    peak[0] = _peak_rss()


def _reset_peak_rss() -> None:
    try:  # Linux: writing 5 resets the peak resident set size (VmHWM) to the current one
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) * 1024
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _precision(device: str) -> str:
    return "fp16" if device == "cuda" else "fp32"


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def _format(value: float) -> str:
    if value == float("inf"):
        return "inf"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _describe(settings: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in settings.items())
