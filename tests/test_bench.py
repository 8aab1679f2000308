"""`python -m editor bench`'s machinery, run on the tiny models (the real architectures are
only for measuring; here the figures that are not timings are checked)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.bench import BenchSettings, run
from tests.tiny_models import build_tiny_sam, make_tiny_sd2_inpaint

ROOT = Path(__file__).resolve().parent.parent
TINY = {"sam": lambda model_type: build_tiny_sam(), "inpaint": lambda name, folder: make_tiny_sd2_inpaint(folder)}


def test_bench_measures_every_section_and_writes_json(tmp_path: Path) -> None:
    engine_parts = ["sam", "inpaint", "crop", "app", "session"]
    settings = BenchSettings.for_run("cpu", engine_parts, quick=True, photo=(640, 480), clicks=4,
                                     models_dir=str(tmp_path))
    report = run(settings, tmp_path / "out.json", builders=TINY)
    rows = json.loads((tmp_path / "out.json").read_text())
    names = {row["name"] for row in rows}
    for name in ("sam_encode_ms", "sam_click_ms", "sam_encoder_runs_per_10_clicks", "inpaint_step_s", "inpaint_s",
                 "inpaint_peak_rss_gb", "crop_24mp_over_1mp", "crop_24mp_exact_outside", "naive_24mp_psnr_outside",
                 "app_startup_s", "app_first_mask_s"):
        assert name in names, name
    assert all({"name", "value", "unit", "settings"} <= set(row) for row in rows)
    assert all(row["settings"]["machine"].startswith("CPU only") for row in rows)
    assert report.get("sam_encoder_runs_per_10_clicks") == 1, "one embedding for all the clicks"
    assert report.get("sam_encoder_runs_per_10_clicks_naive") == 10
    assert report.get("crop_1mp_exact_outside") == 1.0 and report.get("crop_24mp_exact_outside") == 1.0
    assert report.get("naive_24mp_exact_outside") < 0.5, "the whole-photo resize changes the untouched pixels"
    assert all(row["value"] > 0 for row in rows if row["unit"] in ("ms", "s", "GiB"))


def test_bench_command_runs_one_section_and_refuses_bad_flags(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "editor", "bench", "--device", "cpu", "--photo", "10x10"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip() == "error: --photo expects WIDTHxHEIGHT of at least 64x64, got '10x10'"
    done = subprocess.run(command[:-2] + ["--only", "paint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "invalid choice" in done.stderr and done.stderr.count("\n") == 1


def _segmenter_folder(name: str, folder: Path) -> Path:
    from tests.tiny_sam2 import make_tiny_edgetam, make_tiny_sam2

    return make_tiny_edgetam(folder) if name == "edgetam" else make_tiny_sam2(folder)


def _lama_file(path: Path) -> Path:
    from tests.tiny_lama import make_tiny_lama

    made = make_tiny_lama(path.parent / "tiny-lama")["safetensors"]
    return made.rename(path)


def test_bench_segment_part_times_the_first_mask_and_clicks_of_each_segmenter(tmp_path: Path) -> None:
    builders = {**TINY, "segmenter": _segmenter_folder}
    settings = BenchSettings.for_run("cpu", ["segment"], quick=True, photo=(640, 480), clicks=3,
                                     models_dir=str(tmp_path))
    run(settings, tmp_path / "out.json", builders=builders)
    rows = json.loads((tmp_path / "out.json").read_text())
    for name in ("first_mask_s", "click_ms"):
        measured = {row["settings"]["model"]: row for row in rows if row["name"] == name}
        assert set(measured) == {"sam-vit-b", "sam2.1-tiny", "edgetam"}, name
        assert all(row["value"] > 0 and row["settings"]["weights"] == "random weights" for row in measured.values())
    assert {row["name"] for row in rows} == {"first_mask_s", "click_ms"}


def test_bench_erase_part_times_each_eraser_and_keeps_the_photo_outside_the_band(tmp_path: Path) -> None:
    builders = {**TINY, "lama": _lama_file}
    settings = BenchSettings.for_run("cpu", ["erase"], quick=True, models_dir=str(tmp_path))
    report = run(settings, tmp_path / "out.json", builders=builders)
    rows = {row["settings"]["model"]: row for row in json.loads((tmp_path / "out.json").read_text())}
    assert set(rows) == {"lama", "generative (sd2)", "opencv"}
    assert all(row["name"] == "erase_12mp_s" and row["value"] > 0 for row in rows.values())
    assert all(row["settings"]["exact_outside"] == 1.0 for row in rows.values())
    assert "lama" in rows["lama"]["settings"]["erased_by"].lower()
    assert rows["lama"]["settings"]["goal_cpu_s"] == 3.0 and len(report.measurements) == 3


def _upscaler_file(name: str, path: Path) -> Path:
    from tests.tiny_upscaler import STANDS_FOR, make_tiny_upscaler

    kind = {name: kind for kind, name in STANDS_FOR.items()}[name]
    return make_tiny_upscaler(path.parent / f"tiny-{kind}", kind)["safetensors"].rename(path)


def test_bench_upscale_part_times_each_upscaler_beside_lanczos_and_the_12mp_peak(tmp_path: Path) -> None:
    builders = {**TINY, "upscaler": _upscaler_file}
    settings = BenchSettings.for_run("cpu", ["upscale"], quick=True, models_dir=str(tmp_path), upscale_photo=(96, 64),
                                     heavy_upscale_photo=(48, 32), peak_photo=(320, 240), upscale_tile=64)
    run(settings, tmp_path / "out.json", builders=builders)
    rows = json.loads((tmp_path / "out.json").read_text())
    timed = {row["settings"]["model"]: row for row in rows if row["name"] == "upscale_x4_1mp_s"}
    assert set(timed) == {"realesr-general-x4v3", "realesrgan-x4plus", "lanczos"}
    assert all(row["value"] > 0 for row in timed.values()) and timed["realesrgan-x4plus"]["settings"]["tiles"] == 1
    assert timed["lanczos"]["settings"]["upscaled_by"] == "lanczos (no upscaling model)"
    assert timed["realesr-general-x4v3"]["settings"]["upscaled_by"] == "realesr-general-x4v3.safetensors"
    assert "scaled by pixel count" in timed["realesrgan-x4plus"]["settings"]["measured"]
    (peak,) = [row for row in rows if row["name"] == "upscale_12mp_peak_rss_gb"]
    assert peak["value"] > 0 and peak["settings"]["tiles"] == 20 and "first 3 tiles" in peak["settings"]["measured"]
