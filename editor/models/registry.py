"""Every model the editor knows, one entry each: the single source of truth.

`info`, `download`, `models`, config validation, the page header and the bench read these
entries. Adding a model is one backend module (with a `load` function, see `Loader`) and one
entry here. This module imports neither torch nor Gradio.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any, Protocol

from editor.core.config import Config
from editor.core.errors import ConfigError, ModelUnavailableError
from editor.models.base import Kind, fetch_command

_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_REAL_ESRGAN_URL = "https://github.com/xinntao/Real-ESRGAN/releases/download/"


@dataclass(frozen=True)
class Source:
    """Where a model's weights come from: a hub repository, or one file at a URL with its checksum."""

    hub: str | None = None  # owner/name on the Hugging Face Hub
    url: str | None = None  # one file, downloaded to models_dir/<filename>
    filename: str | None = None
    sha256: str | None = None  # the published checksum of `url`, verified after the download
    md5: str | None = None  # where only an MD5 is published (IOPaint's big-lama.pt), verified the same way
    variant: str | None = None  # diffusers weight variant (fp16)
    companions: tuple[str, ...] = ()  # more hub repositories it needs (SDXL's fp16-fix VAE)


@dataclass(frozen=True)
class ModelEntry:
    name: str  # what settings and the command line call it
    kind: Kind
    title: str  # a few words for people
    backend: str  # the module under editor.models that loads it
    source: Source | None  # None: built in (nothing to download)
    size_mb: int  # download size
    licence: str
    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[str, ...] = ("float32", "float16")
    native_size: int | None = None  # the side the model works at, where it has one
    options: dict[str, Any] = field(default_factory=dict)  # what the backend needs to build it (architecture)

    @property
    def builtin(self) -> bool:
        return self.source is None


@dataclass(frozen=True)
class LoadContext:
    """What a backend's `load` receives besides its entry and weights: the settings and the device."""

    config: Config
    device: str  # cpu | cuda, resolved
    show_progress: bool = True
    description: str = ""  # the line `info` and the page show for the model
    fetch: Callable[[], Path] | None = None  # path None: how the weights get here, called at the first load
    shared_cache: Any = None  # the inpainters of one pool: the PipelineCache they share (one memory budget)

    def locate(self, entry: ModelEntry, path: Path | None) -> Path:
        """The weights of `entry`: `path`, or fetched now (at the model's first load) when they are not here."""
        if path is not None:
            return Path(path)
        if self.fetch is None:
            raise ModelUnavailableError(f"{entry.name} is not on this machine: run `{fetch_command(entry.name)}`")
        return self.fetch()

    def weights_file(self, entry: ModelEntry, path: Path | None, instead: str) -> Path | Callable[[], Path]:
        """A single-file model's weights: `path`, or a function that fetches them at the first load.
        Refused at once (one line, naming `instead`: the setting to point elsewhere) when there is no
        file and nothing can fetch it."""
        if (path is None or not path.is_file()) and self.fetch is None:
            raise ModelUnavailableError(f"{entry.title} is not on this machine: run `{fetch_command(entry.name)}` "
                                        f"or {instead}")
        return Path(path) if path is not None else (lambda: self.locate(entry, None))


class Loader(Protocol):
    def __call__(self, entry: ModelEntry, path: Path | None, context: LoadContext) -> Any:
        """The model object (a Segmenter, Eraser, Inpainter, Detector or Upscaler) for `entry`'s weights at `path`.

        Loading the weights themselves may be deferred to first use; a failure there is remembered.
        """


def _sam(name: str, arch: str, filename: str, sha256: str, size_mb: int) -> ModelEntry:
    return ModelEntry(name, "segmenter", f"Segment Anything {arch}", "sam",
                      Source(url=_SAM_URL + filename, filename=filename, sha256=sha256), size_mb, "Apache-2.0",
                      native_size=1024, options={"model_type": arch.replace("-", "_").lower()})


def _sam2(name: str, size: str, size_mb: int) -> ModelEntry:
    return ModelEntry(name, "segmenter", f"SAM 2.1 {size}", "sam2", Source(hub=f"facebook/sam2.1-hiera-{size}"),
                      size_mb, "Apache-2.0", native_size=1024, options={"model_type": "sam2"})


def _realesrgan(name: str, title: str, release: str, filename: str, sha256: str, size_mb: int,
                scale: int) -> ModelEntry:
    """A Real-ESRGAN release file; spandrel reads its architecture (RRDB or the compact VGG) from the weights."""
    return ModelEntry(name, "upscaler", title, "realesrgan",
                      Source(url=f"{_REAL_ESRGAN_URL}{release}/{filename}", filename=filename, sha256=sha256),
                      size_mb, "BSD-3-Clause", options={"scale": scale})


ENTRIES: tuple[ModelEntry, ...] = (
    _sam("sam-vit-b", "ViT-B", "sam_vit_b_01ec64.pth",
         "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375),
    _sam("sam-vit-l", "ViT-L", "sam_vit_l_0b3195.pth",
         "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1250),
    _sam("sam-vit-h", "ViT-H", "sam_vit_h_4b8939.pth",
         "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2560),
    _sam2("sam2.1-tiny", "tiny", 156),
    _sam2("sam2.1-small", "small", 184),
    _sam2("sam2.1-base-plus", "base-plus", 324),
    _sam2("sam2.1-large", "large", 898),
    ModelEntry("edgetam", "segmenter", "EdgeTAM (on-device SAM 2)", "sam2", Source(hub="yonigozlan/EdgeTAM-hf"),
               56, "Apache-2.0", native_size=1024, options={"model_type": "edgetam"}),
    ModelEntry("grabcut", "segmenter", "OpenCV GrabCut (no weights)", "opencv", None, 0, "Apache-2.0",
               dtypes=("uint8",)),
    ModelEntry("lama", "eraser", "LaMa (big-lama)", "lama",
               Source(url="https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt",
                      filename="big-lama.pt", md5="e3aa4aaa15225a33ec84f9f4bc47e500"),
               196, "Apache-2.0", dtypes=("float32", "bfloat16")),
    ModelEntry("opencv", "eraser", "OpenCV Telea (no weights)", "opencv", None, 0, "Apache-2.0", dtypes=("uint8",)),
    ModelEntry("sd2", "inpainter", "Stable Diffusion 2 inpainting", "diffusers_inpaint",
               Source(hub="sd2-community/stable-diffusion-2-inpainting"), 5200, "CreativeML Open RAIL++-M",
               native_size=512),
    ModelEntry("sdxl", "inpainter", "Stable Diffusion XL 1.0 inpainting", "diffusers_inpaint",
               Source(hub="diffusers/stable-diffusion-xl-1.0-inpainting-0.1", variant="fp16",
                      companions=("madebyollin/sdxl-vae-fp16-fix",)),
               5300, "CreativeML Open RAIL++-M", native_size=1024),
    ModelEntry("grounding-dino-tiny", "detector", "Grounding DINO tiny", "detector",
               Source(hub="IDEA-Research/grounding-dino-tiny"), 690, "Apache-2.0"),
    ModelEntry("owlv2", "detector", "OWLv2 base (ensemble)", "detector",
               Source(hub="google/owlv2-base-patch16-ensemble"), 620, "Apache-2.0"),
    # The sha256 sums of the official release files (67,040,989 / 67,061,725 / 4,885,111 bytes).
    _realesrgan("realesrgan-x4plus", "Real-ESRGAN x4plus", "v0.1.0", "RealESRGAN_x4plus.pth",
                "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1", 64, 4),
    _realesrgan("realesrgan-x2plus", "Real-ESRGAN x2plus", "v0.2.1", "RealESRGAN_x2plus.pth",
                "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb", 64, 2),
    _realesrgan("realesr-general-x4v3", "Real-ESRGAN general x4v3 (compact)", "v0.2.5.0", "realesr-general-x4v3.pth",
                "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292", 5, 4),
    ModelEntry("lanczos", "upscaler", "OpenCV Lanczos resize (no weights: a plain resize, not an upscaling model)",
               "opencv", None, 0, "Apache-2.0", dtypes=("uint8",)),
)


# `auto`, per kind and device: the first of these on this machine, else the first one fetched
# (when downloads are allowed). The CPU segmenter is the light one that meets the CPU goal.
AUTO: dict[Kind, dict[str, tuple[str, ...]]] = {
    "segmenter": {"cuda": ("sam-vit-h", "sam-vit-l", "sam-vit-b", "sam2.1-large", "sam2.1-base-plus"),
                  "cpu": ("edgetam", "sam2.1-tiny", "sam2.1-small", "sam-vit-b", "sam-vit-l", "sam-vit-h")},
    "eraser": {"cuda": ("lama",), "cpu": ("lama",)},
    "inpainter": {"cuda": ("sdxl", "sd2"), "cpu": ("sd2", "sdxl")},
    "detector": {"cuda": ("grounding-dino-tiny", "owlv2"), "cpu": ("grounding-dino-tiny", "owlv2")},
    # The compact general model has a 14th of x4plus's parameters (1.2 M): the one a CPU can run on a photo.
    "upscaler": {"cuda": ("realesrgan-x4plus", "realesr-general-x4v3", "realesrgan-x2plus"),
                 "cpu": ("realesr-general-x4v3", "realesrgan-x4plus", "realesrgan-x2plus")},
}
# What runs when `auto` finds nothing here and nothing can be fetched (None: the operation is off).
FALLBACK: dict[Kind, str | None] = {"segmenter": "grabcut", "eraser": "opencv", "inpainter": None, "detector": None,
                                    "upscaler": "lanczos"}


def auto_order(kind: Kind, device: str) -> tuple[str, ...]:
    return AUTO[kind]["cuda" if device == "cuda" else "cpu"]


def names(kind: Kind | None = None) -> list[str]:
    return [entry.name for entry in ENTRIES if kind is None or entry.kind == kind]


def entries(kind: Kind | None = None) -> list[ModelEntry]:
    return [entry for entry in ENTRIES if kind is None or entry.kind == kind]


def get(name: str) -> ModelEntry:
    for entry in ENTRIES:
        if entry.name == name:
            return entry
    raise ConfigError(f"no model is called {name!r}: run `python -m editor models` for the list")


def loader(entry: ModelEntry) -> Loader:
    """The backend's `load` function; its module (and torch, where it needs it) is imported only now."""
    module = importlib.import_module(f"editor.models.{entry.backend}")
    return module.load
