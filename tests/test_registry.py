"""The registry as the one source of truth: `models`, `download` and `info` read it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from editor import cli
from editor.build import download_target
from editor.core.config import load_config
from editor.models import registry

EXPECTED = ["sam-vit-b", "sam-vit-l", "sam-vit-h", "sam2.1-tiny", "sam2.1-small", "sam2.1-base-plus", "sam2.1-large",
            "edgetam", "grabcut", "lama", "opencv", "sd2", "sdxl", "grounding-dino-tiny", "owlv2",
            "realesrgan-x4plus", "realesrgan-x2plus", "realesr-general-x4v3", "lanczos"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def test_models_lists_every_entry_with_size_licence_presence_and_command(
        tmp_path: Path, tiny_sam_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(tiny_sam_path, tmp_path / "sam_vit_b_01ec64.pth")
    status, lines, err = run(capsys, "models", "--set", f"models_dir={tmp_path}")
    assert status == 0 and err == ""
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(rows) == EXPECTED == registry.names()
    assert rows["sam-vit-b"][1:5] == ["segmenter", "375", "MB", "Apache-2.0"]
    assert rows["sam-vit-b"][5] == "yes" and rows["sam-vit-h"][5] == "no"
    assert lines[3].endswith("no        python -m editor download sam-vit-h")
    assert rows["grabcut"][-3:] == ["built", "in", "-"]
    assert rows["sdxl"][1] == "inpainter" and "RAIL++-M" in rows["sdxl"]
    assert rows["realesr-general-x4v3"][1:5] == ["upscaler", "5", "MB", "BSD-3-Clause"]
    assert rows["lanczos"][-3:] == ["built", "in", "-"]


def test_info_prints_one_line_per_kind_naming_entry_and_path(tmp_path: Path, tiny_sam_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(tiny_sam_path, tmp_path / "sam_vit_b_01ec64.pth")
    status, lines, _ = run(capsys, "info", "--set", f"models_dir={tmp_path}", "--set", "device=cpu")
    assert status == 0
    kinds = [line.split(":")[0] for line in lines[:6]]
    assert kinds == ["device", "segmenter", "eraser", "inpainter", "detector", "upscaler"]
    assert lines[1] == f"segmenter: sam-vit-b ({tmp_path / 'sam_vit_b_01ec64.pth'}) on cpu"
    assert lines[2] == "eraser: opencv telea (lama is not here; downloads are off: HF_HUB_OFFLINE=1)"
    assert lines[3] == "inpainter: none (sd2 is not here; downloads are off: HF_HUB_OFFLINE=1)"
    assert lines[5] == ("upscaler: lanczos: a plain resize, no upscaling model (realesr-general-x4v3 is not here; "
                        "downloads are off: HF_HUB_OFFLINE=1; run `python -m editor download upscaler`)")


def test_download_offline_names_the_model_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "download", "eraser", "--set", f"models_dir={tmp_path}")
    assert status == 1 and err == ("error: HF_HUB_OFFLINE=1 is set and lama is not on this machine: "
                                   "run `python -m editor download lama` with network access first\n")
    status, _, err = run(capsys, "download", "grabcut")
    assert status == 1 and err == "error: grabcut is built in: there is nothing to download\n"
    status, _, err = run(capsys, "download", "sam-vit-x")
    assert status == 1 and "no model is called 'sam-vit-x'" in err and err.count("\n") == 1


def test_the_cpu_preference_lives_in_the_registry() -> None:
    assert registry.auto_order("segmenter", "cpu")[0] == "edgetam"
    assert registry.auto_order("segmenter", "cuda")[0] == "sam-vit-h"
    assert registry.auto_order("inpainter", "cpu")[0] == "sd2" and registry.auto_order("inpainter", "cuda")[0] == "sdxl"
    for kind, devices in registry.AUTO.items():
        for order in devices.values():
            assert all(registry.get(name).kind == kind for name in order)


def test_download_fetches_the_hub_model_the_settings_name() -> None:
    """`download inpainter` fetches the configured hub model, not the default beside it."""
    config = load_config(None, ["inpaint.model=someone/my-inpainting"])
    assert download_target("inpainter", config, "cpu").source.hub == "someone/my-inpainting"
    assert download_target("inpaint", config, "cpu").source.hub == "someone/my-inpainting"
    assert download_target("someone/my-inpainting", config, "cpu").kind == "inpainter"
    assert download_target("inpainter", load_config(None, []), "cpu").name == "sd2"
    assert download_target("sdxl", config, "cpu").name == "sdxl"
