"""Tiny random Real-ESRGAN-shaped upscalers, built offline with spandrel's own architecture classes,
and the fixtures that load them through the registry's real code.

- the compact VGG-style network of realesr-general-x4v3 (`Compact`, 8 features, 2 convolutions, x4);
- the RRDB network of x4plus (`ESRGAN`, 8 filters, 1 block, x4);
- the RRDB of x2plus, which unshuffles 2x2 pixels first (12 input channels, x2).

Each is saved as `.safetensors` and as a `.pth` state dict, as the releases are; spandrel reads
the architecture and the factor back from the weights. Random weights: the sizes, the tiling and
the loading are what the tests check, not the look of the pictures.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN

from editor.core.config import Config, UpscalerConfig
from editor.models import registry
from editor.models.realesrgan import RealEsrganUpscaler

SEED = 0
TEST_UPSCALER = UpscalerConfig(tile=32, overlap=8)  # several tiles on a small photo
# The compact x4's receptive field: a pixel sees num_conv + 2 = 4 pixels around it, under the overlap.
BUILDERS = {
    "compact-x4": lambda: Compact(num_feat=8, num_conv=2, upscale=4),
    "rrdb-x4": lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4),
    "rrdb-x2": lambda: ESRGAN(in_nc=12, out_nc=3, num_filters=8, num_blocks=1, scale=4, shuffle_factor=2),
}
# The registry entry each tiny network stands in for.
STANDS_FOR = {"compact-x4": "realesr-general-x4v3", "rrdb-x4": "realesrgan-x4plus", "rrdb-x2": "realesrgan-x2plus"}


def make_tiny_upscaler(folder: Path, kind: str = "compact-x4") -> dict[str, Path]:
    """The same random network as `<kind>.safetensors` and `<kind>.pth`."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    state = {key: value.contiguous() for key, value in BUILDERS[kind]().state_dict().items()}
    files = {"safetensors": folder / f"{kind}.safetensors", "pth": folder / f"{kind}.pth"}
    save_file(state, str(files["safetensors"]))
    torch.save(state, files["pth"])
    return files


def upscaler_context(upscaler: UpscalerConfig = TEST_UPSCALER) -> registry.LoadContext:
    return registry.LoadContext(replace(Config(), upscaler=upscaler), device="cpu", show_progress=False)


def load_upscaler(path: Path, name: str = "realesr-general-x4v3",
                  upscaler: UpscalerConfig = TEST_UPSCALER) -> RealEsrganUpscaler:
    """The file at `path` as the application loads registry model `name`: its entry and its backend's `load`."""
    entry = registry.get(name)
    return registry.loader(entry)(entry, path, upscaler_context(upscaler))


@pytest.fixture(scope="session")
def tiny_upscaler_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """kind -> its files ("safetensors", "pth"), for every tiny network."""
    folder = tmp_path_factory.mktemp("upscalers")
    return {kind: make_tiny_upscaler(folder, kind) for kind in BUILDERS}


@pytest.fixture(scope="session")
def tiny_upscaler(tiny_upscaler_files: dict[str, dict[str, Path]]) -> RealEsrganUpscaler:
    """The compact x4 (`.safetensors`), loaded as realesr-general-x4v3 and warmed up."""
    upscaler = load_upscaler(tiny_upscaler_files["compact-x4"]["safetensors"])
    upscaler.load()
    return upscaler
