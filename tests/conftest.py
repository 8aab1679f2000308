"""Shared fixtures: tiny random models built offline, saved, and loaded through the real code."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Nothing in the test suite may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"

from editor.build import build_engine  # noqa: E402
from editor.core.config import Config, load_config  # noqa: E402
from editor.engine.ops import Engine  # noqa: E402
from tests.tiny_models import (  # noqa: E402
    make_tiny_grounding_dino,
    make_tiny_owlv2,
    make_tiny_sam_checkpoint,
    make_tiny_sd2_inpaint,
    make_tiny_sdxl_inpaint,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_sam_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sam_checkpoint(tmp_path_factory.mktemp("sam") / "tiny_sam.pth")


@pytest.fixture(scope="session")
def tiny_sd2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd2_inpaint(tmp_path_factory.mktemp("sd2") / "tiny-sd2-inpaint")


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sdxl_inpaint(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl-inpaint")


@pytest.fixture(scope="session")
def tiny_detector_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_grounding_dino(tmp_path_factory.mktemp("detector") / "tiny-grounding-dino")


@pytest.fixture(scope="session")
def tiny_owlv2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_owlv2(tmp_path_factory.mktemp("owlv2") / "tiny-owlv2")


@pytest.fixture(scope="session")
def empty_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("no-models")


def tiny_config(models_dir: Path, *overrides: str) -> Config:
    """Settings for tests: CPU, no downloads, few steps, models given by overrides."""
    base = ["device=cpu", f"models_dir={models_dir}", "auto_download=false", "inpaint.steps=2", "inpaint.strength=1.0",
            f"server.sessions_dir={Path(models_dir) / 'sessions'}"]
    return load_config(None, base + list(overrides))


@pytest.fixture(scope="session")
def sam_sd2_engine(tiny_sam_path: Path, tiny_sd2_dir: Path, empty_models_dir: Path) -> Engine:
    """SAM and SD2-style inpainting, both tiny and random."""
    return build_engine(tiny_config(empty_models_dir, f"segmenter.model={tiny_sam_path}",
                                    f"inpaint.model={tiny_sd2_dir}"), show_progress=False)


@pytest.fixture(scope="session")
def fallback_engine(empty_models_dir: Path) -> Engine:
    """No weights at all: GrabCut and OpenCV."""
    return build_engine(tiny_config(empty_models_dir), show_progress=False)


@pytest.fixture
def photo() -> np.ndarray:
    """A synthetic photo: a textured background with a red disc (the 'object') in it."""
    rng = np.random.default_rng(0)
    height, width = 240, 320
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 128)], axis=2).astype(np.int16)
    image += rng.integers(-10, 10, image.shape, dtype=np.int16)
    disc = (xx - 160) ** 2 + (yy - 120) ** 2 < 50**2
    image[disc] = (220, 30, 30)
    return np.clip(image, 0, 255).astype(np.uint8)
