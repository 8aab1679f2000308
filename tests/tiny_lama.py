"""A random LaMa, built offline, and the fixtures that load it through the registry's real code.

spandrel builds big-lama's fixed architecture from any LaMa state dict (the sizes are not read
from the file), so "tiny" here means random weights, not a small network: 51M parameters,
about 200 MB per file, written once per test session. It is saved as `.safetensors` and as a
state dict in a `.pt` (spandrel tries TorchScript first, then reads it as a pickled state dict).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from spandrel.architectures.LaMa import LaMa

from editor.core.config import Config, EraserConfig
from editor.models import registry
from editor.models.lama import LamaEraser

SEED = 0
# Small crops keep a CPU forward of the full-size network well under a second.
TEST_ERASER = EraserConfig(margin_px=16, max_side=128, grow_px=4)


def make_tiny_lama(folder: Path) -> dict[str, Path]:
    """The same random LaMa as `big-lama.safetensors` and `big-lama.pt`."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    state = {key: value.contiguous() for key, value in LaMa(in_nc=4, out_nc=3).state_dict().items()}
    files = {"safetensors": folder / "big-lama.safetensors", "pt": folder / "big-lama.pt"}
    save_file(state, str(files["safetensors"]))
    torch.save(state, files["pt"])
    return files


def lama_context(eraser: EraserConfig = TEST_ERASER) -> registry.LoadContext:
    return registry.LoadContext(replace(Config(), eraser=eraser), device="cpu", show_progress=False)


def load_lama(path: Path, eraser: EraserConfig = TEST_ERASER) -> LamaEraser:
    """LaMa at `path` as the application loads it: the registry's entry and its backend's `load`."""
    entry = registry.get("lama")
    return registry.loader(entry)(entry, path, lama_context(eraser))


@pytest.fixture(scope="session")
def tiny_lama_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny_lama(tmp_path_factory.mktemp("lama"))


@pytest.fixture(scope="session")
def tiny_lama(tiny_lama_files: dict[str, Path]) -> LamaEraser:
    """The `.safetensors` copy, loaded and warmed up."""
    eraser = load_lama(tiny_lama_files["safetensors"])
    eraser.load()
    return eraser
