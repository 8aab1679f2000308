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

SAM_HINT = "python -m editor download sam"
INPAINT_HINT = "python -m editor download inpaint"


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
    return attempts


def test_no_weights_means_grabcut_and_opencv(empty_models_dir: Path, no_downloads: list[str]) -> None:
    config = tiny_config(empty_models_dir)
    plan = plan_backends(config)
    assert plan.device == "cpu" and plan.sam.path is None and plan.inpaint.path is None
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
    config = tiny_config(empty_models_dir, f"sam.checkpoint={tiny_sam_path}")
    plan = plan_backends(config)
    assert plan.sam.path == tiny_sam_path
    info = describe(plan, config)
    assert info.segmenter.startswith("sam custom") and str(tiny_sam_path) in info.segmenter
    assert info.segmenter.endswith("on cpu")
    assert SAM_HINT not in info.hint and INPAINT_HINT in info.hint
    engine = build_engine(config, show_progress=False)
    assert isinstance(engine.segmenter, SamSegmenter)
    assert engine.segmenter.description == info.segmenter
    assert engine.segmenter.cache_budget == 64 * 2**20  # sam.embedding_cache_mb's default
    small = build_engine(tiny_config(empty_models_dir, f"sam.checkpoint={tiny_sam_path}", "sam.embedding_cache_mb=1.5"),
                         show_progress=False)
    assert small.segmenter.cache_budget == int(1.5 * 2**20)


def test_an_unreadable_sam_checkpoint_is_described_without_a_type_and_builds(empty_models_dir: Path,
                                                                             tmp_path: Path) -> None:
    """Reading the architecture is part of loading: a damaged file is reported when it fails to load."""
    broken = tmp_path / "mine.pth"
    broken.write_bytes(b"\x00" * 64)
    config = tiny_config(empty_models_dir, f"sam.checkpoint={broken}")
    assert describe(plan_backends(config), config).segmenter == f"sam ({broken}) on cpu"
    engine = build_engine(config, show_progress=False)
    engine.warm_up()
    assert engine.status().segmenter.startswith("grabcut") and "mine.pth" in engine.status().errors[0]


def test_local_diffusers_folder(empty_models_dir: Path, tiny_sd2_dir: Path, tiny_sam_path: Path) -> None:
    config = tiny_config(empty_models_dir, f"inpaint.model={tiny_sd2_dir}", f"sam.checkpoint={tiny_sam_path}")
    plan = plan_backends(config)
    assert plan.inpaint.path == tiny_sd2_dir and not plan.inpaint.download
    info = describe(plan, config)
    assert info.inpainter.startswith("diffusers inpainting") and str(tiny_sd2_dir) in info.inpainter
    assert "fp32 on cpu" in info.inpainter
    assert str(tiny_sd2_dir) in info.eraser and "OpenCV" in info.eraser
    assert info.hint == ""


def test_official_sam_file_in_models_dir_is_found(tmp_path: Path, tiny_sam_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_sam_path, models / "sam_vit_b_01ec64.pth")
    config = tiny_config(models)
    plan = plan_backends(config)
    assert plan.sam.path == models / "sam_vit_b_01ec64.pth"
    info = describe(plan, config)
    assert info.segmenter.startswith("sam vit_b")  # named by its file
    assert isinstance(build_engine(config, show_progress=False).segmenter, SamSegmenter)


def test_model_type_picks_its_own_file(tmp_path: Path, tiny_sam_path: Path) -> None:
    shutil.copy(tiny_sam_path, tmp_path / "sam_vit_b_01ec64.pth")
    shutil.copy(tiny_sam_path, tmp_path / "sam_vit_l_0b3195.pth")
    assert plan_backends(tiny_config(tmp_path)).sam.path.name == "sam_vit_b_01ec64.pth"  # CPU prefers vit_b
    plan = plan_backends(tiny_config(tmp_path, "sam.model_type=vit_l"))
    assert plan.sam.path.name == "sam_vit_l_0b3195.pth"
    assert plan_backends(tiny_config(tmp_path, "sam.model_type=vit_h")).sam.path is None


def test_missing_sam_checkpoint_path_is_a_config_error(empty_models_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    message = config_error(lambda: plan_backends(tiny_config(empty_models_dir, f"sam.checkpoint={missing}")))
    assert "sam.checkpoint" in message and str(missing) in message
    message = config_error(lambda: plan_backends(tiny_config(empty_models_dir, f"sam.checkpoint={tmp_path}")))
    assert "sam.checkpoint" in message  # a folder is not a checkpoint file


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
    assert plan.inpaint.path is None and not plan.inpaint.download
    info = describe(plan, config)
    assert "someone/some-inpainting-model" in info.inpainter and info.inpainter.startswith("none")
    assert build_engine(config, show_progress=False).inpainter is None
    assert no_downloads == []


def test_auto_download_while_offline_downloads_nothing_and_falls_back(empty_models_dir: Path,
                                                                      no_downloads: list[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tiny_config(empty_models_dir, "auto_download=true", "inpaint.model=sdxl")
    plan = plan_backends(config)
    assert not plan.sam.download and not plan.inpaint.download
    info = describe(plan, config)
    assert info.segmenter.startswith("grabcut") and info.inpainter.startswith("none")
    engine = build_engine(config, show_progress=False)
    assert isinstance(engine.segmenter, GrabCutSegmenter) and engine.inpainter is None
    assert no_downloads == []
    assert list(empty_models_dir.iterdir()) == []


def test_auto_download_that_fails_falls_back(empty_models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online with auto_download, but every fetch fails: the editor still starts, on the fallbacks."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    tried: list[str] = []

    def failing_sam(model_type, models_dir, show_progress=True):  # type: ignore[no-untyped-def]
        tried.append(f"sam {model_type}")
        raise EditorError("download failed: no network")

    def failing_inpaint(model, show_progress=True, **kwargs):  # type: ignore[no-untyped-def]
        tried.append(f"inpaint {model}")
        raise EditorError("download failed: no network")

    def failing_detector(model, show_progress=True, **kwargs):  # type: ignore[no-untyped-def]
        tried.append(f"detector {model}")
        raise EditorError("download failed: no network")

    monkeypatch.setattr(weights, "fetch_sam", failing_sam)
    monkeypatch.setattr(weights, "fetch_inpaint_model", failing_inpaint)
    monkeypatch.setattr(weights, "fetch_detector", failing_detector)
    monkeypatch.setattr(weights, "cached_hub_snapshot", lambda repo_id, **kwargs: None)
    config = tiny_config(empty_models_dir, "auto_download=true")
    info = describe(plan_backends(config), config)
    assert "downloads on first use" in info.segmenter and "downloads on first use" in info.inpainter
    engine = build_engine(config, show_progress=False)
    assert tried == ["sam vit_b", "inpaint sd2", "detector IDEA-Research/grounding-dino-tiny"]
    assert isinstance(engine.segmenter, GrabCutSegmenter) and engine.inpainter is None
    assert engine.detector is None and engine.backends.detector.startswith("none")
    assert engine.backends.segmenter.startswith("grabcut") and engine.backends.inpainter.startswith("none")


def test_auto_download_fetches_then_loads(tmp_path: Path, tiny_sam_path: Path, tiny_sd2_dir: Path,
                                          tiny_detector_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A successful fetch (simulated by copying the tiny models into place) is loaded right away."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    snapshot: dict[str, Path] = {}

    def fake_sam(model_type, models_dir, show_progress=True):  # type: ignore[no-untyped-def]
        dest = weights.sam_checkpoint_path(model_type, models_dir)
        shutil.copy(tiny_sam_path, dest)
        return dest

    def fake_inpaint(model, show_progress=True, **kwargs):  # type: ignore[no-untyped-def]
        snapshot[weights.INPAINT_PRESETS[model].repo_id] = tiny_sd2_dir
        return str(tiny_sd2_dir)

    def fake_detector(model, show_progress=True, **kwargs):  # type: ignore[no-untyped-def]
        snapshot[model] = tiny_detector_dir
        return str(tiny_detector_dir)

    monkeypatch.setattr(weights, "fetch_sam", fake_sam)
    monkeypatch.setattr(weights, "fetch_inpaint_model", fake_inpaint)
    monkeypatch.setattr(weights, "fetch_detector", fake_detector)
    monkeypatch.setattr(weights, "cached_hub_snapshot", lambda repo_id, **kwargs: snapshot.get(repo_id))
    engine = build_engine(tiny_config(tmp_path, "auto_download=true"), show_progress=False)
    assert isinstance(engine.segmenter, SamSegmenter)
    assert engine.inpainter is not None and engine.inpainter.source.path == tiny_sd2_dir
    assert engine.inpainter.native_size == 512  # the sd2 preset's size
    assert engine.backends.hint == ""
    assert engine.detector is not None and engine.detector.path == tiny_detector_dir


def test_preset_found_in_the_hub_cache(empty_models_dir: Path, tiny_sdxl_dir: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cache = {"diffusers/stable-diffusion-xl-1.0-inpainting-0.1": tiny_sdxl_dir,
             "madebyollin/sdxl-vae-fp16-fix": tiny_sdxl_dir / "vae"}
    monkeypatch.setattr(weights, "cached_hub_snapshot", lambda repo_id, **kwargs: cache.get(repo_id))
    config = tiny_config(empty_models_dir, "inpaint.model=sdxl")
    plan = plan_backends(config)
    assert plan.inpaint.path == tiny_sdxl_dir and plan.inpaint.vae_path == tiny_sdxl_dir / "vae"
    assert plan.inpaint.variant == "fp16" and plan.inpaint.native_size == 1024
    assert "sdxl inpainting" in describe(plan, config).inpainter
    del cache["madebyollin/sdxl-vae-fp16-fix"]  # without its fp16-safe VAE the preset is incomplete
    assert plan_backends(config).inpaint.path is None


def test_info_is_instant_and_loads_nothing(empty_models_dir: Path, tiny_sam_path: Path, tiny_sd2_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def no_loading(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("plan/describe loaded a model")

    import editor.models.diffusers_inpaint
    import editor.models.sam_loader

    monkeypatch.setattr(editor.models.sam_loader, "load_sam", no_loading)
    monkeypatch.setattr(editor.models.diffusers_inpaint, "load_pipeline", no_loading)
    config = tiny_config(empty_models_dir, f"sam.checkpoint={tiny_sam_path}", f"inpaint.model={tiny_sd2_dir}")
    assert describe(plan_backends(config), config).segmenter.startswith("sam")

