"""From settings to backends: what `info` reports, what gets loaded, and the fallbacks."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from editor.models import weights
from editor.build import build_engine, describe, plan_backends
from editor.core.errors import ConfigError, EditorError
from editor.models.opencv import GrabCutSegmenter
from editor.models.sam import SamSegmenter
from tests.conftest import tiny_config

SAM_HINT = "python -m editor download segmenter"
INPAINT_HINT = "python -m editor download inpainter"


def config_error(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.fixture
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every attempt to fetch weights."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        attempts.append(str(args[0]) if args else "?")
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(weights, "download_file", refuse)
    monkeypatch.setattr(weights, "_hub_download", refuse)
    monkeypatch.setattr(weights, "unreachable", refuse)
    return attempts


def test_no_weights_means_grabcut_and_opencv(empty_models_dir: Path, no_downloads: list[str]) -> None:
    config = tiny_config(empty_models_dir)
    plan = plan_backends(config)
    assert plan.device == "cpu" and plan.segmenter.path is None and plan.inpaint.path is None
    info = describe(plan, config)
    assert info.device == "cpu"
    assert info.segmenter.startswith("grabcut")
    assert info.inpainter.startswith("none") and "sd2" in info.inpainter  # auto is sd2 on a CPU
    assert "opencv" in info.eraser
    assert SAM_HINT in info.hint and INPAINT_HINT in info.hint
    engine = build_engine(config, show_progress=False)
    assert isinstance(engine.segmenter, GrabCutSegmenter) and engine.inpainter is None
    assert engine.backends == info
    assert no_downloads == []


def test_tiny_sam_by_path(empty_models_dir: Path, tiny_sam_path: Path) -> None:
    config = tiny_config(empty_models_dir, f"segmenter.model={tiny_sam_path}")
    plan = plan_backends(config)
    assert plan.segmenter.path == tiny_sam_path and plan.segmenter.entry.backend == "sam"
    info = describe(plan, config)
    assert info.segmenter.startswith("sam custom") and str(tiny_sam_path) in info.segmenter
    assert info.segmenter.endswith("on cpu")
    assert SAM_HINT not in info.hint and INPAINT_HINT in info.hint
    engine = build_engine(config, show_progress=False)
    assert isinstance(engine.segmenter, SamSegmenter)
    assert engine.segmenter.description == info.segmenter
    assert engine.segmenter.cache_budget == 64 * 2**20  # segmenter.embedding_cache_mb default
    small = build_engine(tiny_config(empty_models_dir, f"segmenter.model={tiny_sam_path}", "segmenter.embedding_cache_mb=1.5"),
                         show_progress=False)
    assert small.segmenter.cache_budget == int(1.5 * 2**20)


def test_an_unreadable_sam_checkpoint_is_described_without_a_type_and_builds(empty_models_dir: Path,
                                                                             tmp_path: Path) -> None:
    """Reading the architecture is part of loading: a damaged file is reported when it fails to load."""
    broken = tmp_path / "mine.pth"
    broken.write_bytes(b"\x00" * 64)
    config = tiny_config(empty_models_dir, f"segmenter.model={broken}")
    assert describe(plan_backends(config), config).segmenter == f"sam ({broken}) on cpu"
    engine = build_engine(config, show_progress=False)
    engine.warm_up()
    assert engine.status().segmenter.startswith("grabcut") and "mine.pth" in engine.status().errors[0]


def test_local_diffusers_folder(empty_models_dir: Path, tiny_sd2_dir: Path, tiny_sam_path: Path) -> None:
    config = tiny_config(empty_models_dir, f"inpaint.model={tiny_sd2_dir}", f"segmenter.model={tiny_sam_path}")
    plan = plan_backends(config)
    assert plan.inpaint.path == tiny_sd2_dir and not plan.inpaint.fetch
    info = describe(plan, config)
    assert info.inpainter.startswith("diffusers inpainting") and str(tiny_sd2_dir) in info.inpainter
    assert "fp32 on cpu" in info.inpainter
    assert str(tiny_sd2_dir) in info.eraser and "OpenCV" in info.eraser
    assert info.hint == ""


def test_official_sam_file_in_models_dir_is_found(tmp_path: Path, tiny_sam_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_sam_path, models / "sam_vit_b_01ec64.pth")
    config = tiny_config(models)  # auto on a CPU: edgetam first, then sam2.1, then the SAM files
    plan = plan_backends(config)
    assert plan.segmenter.name == "sam-vit-b" and plan.segmenter.path == models / "sam_vit_b_01ec64.pth"
    info = describe(plan, config)
    assert info.segmenter.startswith("sam-vit-b") and info.segmenter.endswith("on cpu")
    config = tiny_config(models, "segmenter.model=sam-vit-b")
    assert plan_backends(config).segmenter.path == models / "sam_vit_b_01ec64.pth"
    assert isinstance(build_engine(config, show_progress=False).segmenter, SamSegmenter)


def test_a_named_model_that_is_not_here_falls_back_and_says_why(tmp_path: Path, tiny_sam_path: Path) -> None:
    shutil.copy(tiny_sam_path, tmp_path / "sam_vit_b_01ec64.pth")
    plan = plan_backends(tiny_config(tmp_path, "segmenter.model=sam-vit-h"))
    assert plan.segmenter.name == "grabcut" and plan.segmenter.why.startswith("sam-vit-h is not here")
    assert "downloads are off" in plan.segmenter.why


def test_missing_segmenter_path_is_a_config_error(empty_models_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    message = config_error(lambda: plan_backends(tiny_config(empty_models_dir, f"segmenter.model={missing}")))
    assert "segmenter.model" in message and str(missing) in message and "sam-vit-b" in message
    message = config_error(lambda: plan_backends(tiny_config(empty_models_dir, f"segmenter.model={tmp_path}")))
    assert "segmenter.model" in message  # a folder without a model's files
    message = config_error(lambda: plan_backends(tiny_config(empty_models_dir, "segmenter.model=lama")))
    assert "lama is an eraser, not a segmenter" in message


@pytest.mark.parametrize("model", ["./no-such-folder", "/no/such/folder", "~/no-such-folder-xyz", "not a model",
                                   "a/b/c"])
def test_inpaint_model_that_is_neither_folder_nor_hub_id(empty_models_dir: Path, model: str) -> None:
    message = config_error(lambda: plan_backends(tiny_config(empty_models_dir, f"inpaint.model={model}")))
    assert "inpaint.model" in message and model in message


def test_folder_without_model_index_is_a_config_error(empty_models_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "unet").mkdir()
    message = config_error(lambda: plan_backends(tiny_config(empty_models_dir, f"inpaint.model={folder}")))
    assert "model_index.json" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_on_a_cpu_only_machine_is_a_config_error(empty_models_dir: Path) -> None:
    message = config_error(lambda: plan_backends(tiny_config(empty_models_dir, "device=cuda")))
    assert "cuda" in message
    assert plan_backends(tiny_config(empty_models_dir, "device=auto")).device == "cpu"


def test_uncached_hub_id_is_reported_as_not_downloaded(empty_models_dir: Path, no_downloads: list[str]) -> None:
    config = tiny_config(empty_models_dir, "inpaint.model=someone/some-inpainting-model")
    plan = plan_backends(config)
    assert plan.inpaint.path is None and not plan.inpaint.fetch
    info = describe(plan, config)
    assert "someone/some-inpainting-model" in info.inpainter and info.inpainter.startswith("none")
    assert build_engine(config, show_progress=False).inpainter is None
    assert no_downloads == []


@pytest.mark.parametrize("switch", ["HF_HUB_OFFLINE=1", "auto_download=false"])
def test_downloads_off_fetch_nothing_and_name_the_fallbacks(empty_models_dir: Path, no_downloads: list[str],
                                                             monkeypatch: pytest.MonkeyPatch, switch: str) -> None:
    if switch == "HF_HUB_OFFLINE=1":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        config = tiny_config(empty_models_dir, "auto_download=true")
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        config = tiny_config(empty_models_dir, "auto_download=false")
    why = "downloads are off: " + ("HF_HUB_OFFLINE=1" if switch.startswith("HF") else "auto_download is false")
    info = describe(plan_backends(config), config)
    assert info.segmenter == f"grabcut (edgetam is not here; {why})"
    assert info.eraser == f"opencv telea (lama is not here; {why})"
    assert info.inpainter == f"none (sd2 is not here; {why})"
    assert info.detector.startswith(f"none (grounding-dino-tiny is not here; {why}")
    engine = build_engine(config, show_progress=False)
    engine.warm_up(detector=True)
    assert isinstance(engine.segmenter, GrabCutSegmenter) and engine.inpainter is None and engine.detector is None
    assert no_downloads == [] and list(empty_models_dir.iterdir()) == []


def test_an_unreachable_network_falls_back_within_seconds(empty_models_dir: Path, no_downloads: list[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import time

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: every connection is refused
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(weights, "unreachable", _real_unreachable)  # downloads refused, the probe real
        config = tiny_config(empty_models_dir, "auto_download=true", "eraser.model=opencv")
        started = time.monotonic()
        info = describe(plan_backends(config), config)
        assert time.monotonic() - started < 5
    assert info.segmenter.startswith("grabcut (edgetam is not here; no network: 127.0.0.1")
    assert info.inpainter.startswith("none (sd2 is not here; no network")
    assert no_downloads == []


def test_missing_models_are_fetched_when_they_first_load(tmp_path: Path, tiny_sam_path: Path, tiny_sd2_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Online: the plan names the defaults, and each is fetched at its first load, not at build."""
    from editor.models import registry

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(weights, "unreachable", lambda url, timeout=3.0: None)
    monkeypatch.setattr(registry, "AUTO", {**registry.AUTO, "segmenter": {"cpu": ("sam-vit-b",), "cuda": ("sam-vit-b",)}})
    fetched: list[str] = []

    def fake_fetch(entry, models_dir, show_progress=True, **kwargs):  # type: ignore[no-untyped-def]
        fetched.append(entry.name)
        if entry.name == "sam-vit-b":
            return Path(shutil.copy(tiny_sam_path, Path(models_dir) / "sam_vit_b_01ec64.pth"))
        return tiny_sd2_dir

    monkeypatch.setattr(weights, "fetch", fake_fetch)
    monkeypatch.setattr(weights, "companion_paths", lambda entry, **kwargs: ())
    config = tiny_config(tmp_path, "auto_download=true", "eraser.model=generative", "detector.model=none/none")
    info = describe(plan_backends(config), config)
    assert info.segmenter.endswith("(downloads at start)") and info.inpainter.endswith("(downloads at the first edit)")
    engine = build_engine(config, show_progress=False)
    assert fetched == []
    engine.warm_up()
    assert fetched == ["sam-vit-b"], "the segmenter at start; the inpainting model waits for the first edit"
    assert engine.status().errors == ()
    assert engine.inpainter.native_size == 512 and engine.inpainter.load_error is None


def test_local_folders_and_files_are_recognised(empty_models_dir: Path, tiny_sd2_dir: Path, tiny_sam_path: Path,
                                               tmp_path: Path) -> None:
    for model_type, options in [("sam2", "sam2"), ("sam2_video", "sam2"), ("edgetam", "edgetam")]:
        folder = tmp_path / model_type
        folder.mkdir()
        (folder / "config.json").write_text(f'{{"model_type": "{model_type}"}}')
        choice = plan_backends(tiny_config(empty_models_dir, f"segmenter.model={folder}")).segmenter
        assert (choice.entry.backend, choice.entry.options["model_type"], choice.path) == ("sam2", options, folder)
    plan = plan_backends(tiny_config(empty_models_dir, f"segmenter.model={tiny_sam_path}",
                                     f"inpaint.model={tiny_sd2_dir}"))
    assert plan.segmenter.entry.backend == "sam" and plan.inpaint.entry.backend == "diffusers_inpaint"
    lama = tmp_path / "big-lama.safetensors"
    lama.write_bytes(b"weights")
    eraser = plan_backends(tiny_config(empty_models_dir, f"eraser.model={lama}")).eraser
    assert (eraser.entry.backend, eraser.path) == ("lama", lama)
    detector = tmp_path / "owl"
    detector.mkdir()
    (detector / "config.json").write_text('{"model_type": "owlv2"}')
    message = config_error(lambda: plan_backends(tiny_config(empty_models_dir, f"segmenter.model={detector}")))
    assert "holds a detector (owlv2), not a segmenter" in message
    message = config_error(lambda: plan_backends(tiny_config(empty_models_dir, f"inpaint.model={tiny_sam_path}")))
    assert "inpaint.model" in message and "sd2" in message


def test_preset_found_in_the_hub_cache(empty_models_dir: Path, tiny_sdxl_dir: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cache = {"diffusers/stable-diffusion-xl-1.0-inpainting-0.1": tiny_sdxl_dir,
             "madebyollin/sdxl-vae-fp16-fix": tiny_sdxl_dir / "vae"}
    monkeypatch.setattr(weights, "cached_hub_snapshot", lambda repo_id, **kwargs: cache.get(repo_id))
    config = tiny_config(empty_models_dir, "inpaint.model=sdxl")
    plan = plan_backends(config)
    assert plan.inpaint.path == tiny_sdxl_dir
    assert "sdxl inpainting" in describe(plan, config).inpainter
    inpainter = build_engine(config, show_progress=False).inpainter
    assert inpainter.source.vae_path == tiny_sdxl_dir / "vae"
    assert inpainter.source.variant == "fp16" and inpainter.native_size == 1024
    del cache["madebyollin/sdxl-vae-fp16-fix"]  # without its fp16-safe VAE the model is incomplete
    assert plan_backends(config).inpaint.path is None


_real_unreachable = weights.unreachable


def test_info_is_instant_and_loads_nothing(empty_models_dir: Path, tiny_sam_path: Path, tiny_sd2_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def no_loading(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("plan/describe loaded a model")

    import editor.models.diffusers_inpaint
    import editor.models.sam_loader

    monkeypatch.setattr(editor.models.sam_loader, "load_sam", no_loading)
    monkeypatch.setattr(editor.models.diffusers_inpaint, "load_pipeline", no_loading)
    config = tiny_config(empty_models_dir, f"segmenter.model={tiny_sam_path}", f"inpaint.model={tiny_sd2_dir}")
    assert describe(plan_backends(config), config).segmenter.startswith("sam")

