"""Models that are here but fail to load: one remembered line each, and the editor goes on with the fallbacks."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from editor.models import diffusers_inpaint as inpainter_module
from editor.models import sam_loader
from editor.build import build_engine
from editor.engine.ops import Engine
from editor.core.errors import ModelLoadError
from editor.core.prompts import Prompts
from editor.models.opencv import GrabCutSegmenter
from tests.conftest import tiny_config


def counting(monkeypatch: pytest.MonkeyPatch, module: object, name: str, fail: BaseException | None = None
             ) -> list[object]:
    """Count the calls of `module.name`; raise `fail` instead of running it when given."""
    calls: list[object] = []
    real = getattr(module, name)

    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args[0] if args else None)
        if fail is not None:
            raise fail
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


@pytest.fixture
def truncated_sam(tiny_sam_path: Path, tmp_path: Path) -> Path:
    data = tiny_sam_path.read_bytes()
    path = tmp_path / "sam_truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def broken_sd2(tiny_sd2_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny SD2 folder whose UNet weights file was cut short (an interrupted copy)."""
    folder = tmp_path / "broken-sd2"
    shutil.copytree(tiny_sd2_dir, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    return folder


def broken_engine(models_dir: Path, sam: Path, sd2: Path) -> Engine:
    return build_engine(tiny_config(models_dir, f"segmenter.model={sam}", f"inpaint.model={sd2}"), show_progress=False)


def grabcut_select(photo: np.ndarray, prompts: Prompts) -> np.ndarray:
    grabcut = GrabCutSegmenter()
    return grabcut.segment(grabcut.prepare(photo), prompts).mask


def one_line(message: str) -> str:
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


def test_broken_sam_and_inpainting_model_leave_the_editor_working_on_the_fallbacks(
        empty_models_dir: Path, truncated_sam: Path, broken_sd2: Path, photo: np.ndarray,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    sam_loads = counting(monkeypatch, sam_loader, "load_sam")
    pipeline_loads = counting(monkeypatch, inpainter_module, "load_pipeline")
    engine = broken_engine(empty_models_dir, truncated_sam, broken_sd2)  # the SAM type unreadable: still builds
    assert engine.status().errors == ()  # nothing tried yet
    with caplog.at_level(logging.ERROR):
        engine.warm_up()  # raises nothing
    status = engine.status()
    assert engine.backends == status
    assert len(status.errors) == 2
    sam_error, inpaint_error = (one_line(e) for e in status.errors)
    assert "sam_truncated.pth" in sam_error and sam_error.endswith("selecting with GrabCut")
    assert "broken-sd2" in inpaint_error and "Erase uses the classical fill" in inpaint_error
    assert status.segmenter.startswith("grabcut") and "failed to load" in status.segmenter
    assert status.inpainter.startswith("none") and "failed to load" in status.inpainter
    assert status.eraser.startswith("opencv")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == \
        [e.split("; ")[0] for e in status.errors], "each failure logged once, in one line"

    # Clicks select with GrabCut, exactly as the fallback does.
    prompts = Prompts().add_point(160, 120)
    for _ in range(3):
        assert np.array_equal(engine.select(photo, prompts), grabcut_select(photo, prompts))
    # Erase works classically; Fill says the model failed to load, and why, in one line.
    mask = engine.select(photo, Prompts(box=(100, 60, 220, 180)))
    erased = engine.erase(photo, mask)
    assert erased.metadata["model"] == "opencv-telea" and not np.array_equal(erased.images[0], photo)
    with pytest.raises(ModelLoadError) as refused:
        engine.fill(photo, mask, "tulips")
    assert one_line(str(refused.value)) == inpaint_error.split("; ")[0]
    with pytest.raises(ModelLoadError):
        engine.replace_background(photo, mask, "a beach")
    assert len(sam_loads) == 1 and len(pipeline_loads) == 1, "each model is tried once, not at every click"
    assert engine.status() == status


def test_a_failure_found_at_first_use_is_remembered_the_same_way(empty_models_dir: Path, truncated_sam: Path,
                                                                 broken_sd2: Path, photo: np.ndarray,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a warm-up (the command line), the first click and the first erase find the failure."""
    sam_loads = counting(monkeypatch, sam_loader, "load_sam")
    pipeline_loads = counting(monkeypatch, inpainter_module, "load_pipeline")
    engine = broken_engine(empty_models_dir, truncated_sam, broken_sd2)
    mask = engine.select(photo, Prompts(box=(100, 60, 220, 180)))
    assert engine.erase(photo, mask).metadata["model"] == "opencv-telea"
    assert engine.erase(photo, mask).metadata["model"] == "opencv-telea"
    assert len(engine.status().errors) == 2 and len(sam_loads) == 1 and len(pipeline_loads) == 1


@pytest.mark.parametrize("failure", [
    RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be reported"),
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"),
    MemoryError(),
])
def test_any_exception_while_loading_becomes_one_remembered_line(failure: BaseException, empty_models_dir: Path,
                                                                  tiny_sam_path: Path, tiny_sd2_dir: Path,
                                                                  photo: np.ndarray,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sam_loads = counting(monkeypatch, sam_loader, "load_sam", fail=failure)
    pipeline_loads = counting(monkeypatch, inpainter_module, "load_pipeline", fail=failure)
    engine = broken_engine(empty_models_dir, tiny_sam_path, tiny_sd2_dir)
    engine.warm_up()
    sam_error, inpaint_error = (one_line(e) for e in engine.status().errors)
    name = type(failure).__name__
    assert sam_error.startswith(f"SAM failed to load: {name}")
    assert inpaint_error.startswith(f"the inpainting model {tiny_sd2_dir} failed to load: {name}")
    engine.select(photo, Prompts().add_point(160, 120))
    engine.warm_up()  # again: nothing is retried
    assert len(sam_loads) == 1 and len(pipeline_loads) == 1


def test_a_broken_detector_turns_select_by_name_off_and_says_why(empty_models_dir: Path, tiny_detector_dir: Path,
                                                                 tmp_path: Path, photo: np.ndarray) -> None:
    broken = tmp_path / "broken-detector"
    shutil.copytree(tiny_detector_dir, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(weights.read_bytes()[:100])
    engine = build_engine(tiny_config(empty_models_dir, f"detector.model={broken}"), show_progress=False)
    for _ in range(2):
        with pytest.raises(ModelLoadError) as refused:
            engine.detect(photo, "dog")
        assert one_line(str(refused.value)).startswith("the detector broken-detector failed to load")
    [error] = engine.status().errors
    assert error.endswith("select by name is off") and engine.status().detector.startswith("none")
    assert engine.select(photo, Prompts().add_point(160, 120)).any(), "clicks still select"


def test_the_app_warm_up_thread_never_dies_with_a_traceback(fallback_engine: Engine,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import app

    class Exploding:
        def warm_up(self) -> None:
            raise ValueError("an unexpected bug\nwith a second line")

    app.warm_up(fallback_engine)
    app.warm_up(Exploding())  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert err == "error: warming up failed: ValueError: an unexpected bug\n"


def test_info_load_reports_each_failed_model(empty_models_dir: Path, truncated_sam: Path, broken_sd2: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from editor import cli

    settings = ["--set", "device=cpu", "--set", f"models_dir={empty_models_dir}", "--set", f"segmenter.model={truncated_sam}",
                "--set", f"inpaint.model={broken_sd2}"]
    assert cli.main(["info", *settings]) == 0
    planned = capsys.readouterr().out
    assert "failed:" not in planned and "--load" in planned
    assert cli.main(["info", "--load", *settings]) == 0
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 2 and "sam_truncated.pth" in failed[0] and "broken-sd2" in failed[1]
    assert "segmenter: grabcut" in out and "inpainter: none" in out
    assert "concurrency: 1 model call at once" in out


def test_reasons_are_one_line_cut_after_a_sentence() -> None:
    from editor.core.errors import EditorError
    from editor.models.loading import clip, one_line, reason_with_cause

    assert one_line(RuntimeError("CUDA error: out of memory\nCompile with TORCH_USE_CUDA_DSA")) == \
        "RuntimeError: CUDA error: out of memory"
    assert one_line(MemoryError()) == "MemoryError"
    assert one_line(EditorError("cannot read SAM checkpoint x.pth: damaged")) == "cannot read SAM checkpoint x.pth: damaged"
    assert clip("The file is damaged" + "!" * 150 + ". " + "x" * 400) == "The file is damaged" + "!" * 150 + "."
    assert len(clip("y" * 1000)) == 300 and clip("y" * 1000).endswith("...")
    try:
        try:
            raise ValueError("incomplete metadata")
        except ValueError:
            raise OSError("Unable to load weights from w.safetensors")  # noqa: B904 (as diffusers does)
    except OSError as exc:
        assert reason_with_cause(exc) == "incomplete metadata: Unable to load weights from w.safetensors"


def test_the_app_with_a_broken_sam_serves_and_logs_one_line(empty_models_dir: Path, truncated_sam: Path) -> None:
    """`python app.py` with a damaged checkpoint: the page comes up, the warm-up logs one line, no traceback."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.test_app_client import ROOT, free_port

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("EDITOR_USERNAME", None)
    env.pop("EDITOR_PASSWORD", None)
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--set", "device=cpu",
                                "--set", f"models_dir={empty_models_dir}", "--set", f"segmenter.model={truncated_sam}",
                                "--set", f"server.sessions_dir={empty_models_dir / 'sessions'}"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, up = time.monotonic() + 90, False
        while time.monotonic() < deadline and process.poll() is None and not up:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2):
                    up = True
            except OSError:
                time.sleep(0.5)
        time.sleep(2)  # the warm-up runs behind the page; a damaged file fails at once
        assert up and process.poll() is None, "the app must keep serving"
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    failures = [line for line in output.splitlines() if "sam_truncated.pth" in line and "cannot read" in line]
    assert len(failures) == 1 and "Traceback" not in output, output
