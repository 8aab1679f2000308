"""Stable Diffusion inpainting through diffusers, with tiny random SD2- and SDXL-style pipelines."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

from editor.models import diffusers_inpaint as inpainter_module
from editor.core import masks
from editor.build import build_engine
from editor.engine.ops import EditOptions, Engine
from editor.core.errors import EditCancelled, EditorError
from editor.models.base import InpaintRequest, OutOfMemory
from editor.models.diffusers_inpaint import (
    DiffusersInpainter,
    ModelSource,
    PipelineCache,
    PipelineOptions,
    estimate_bytes,
    load_pipeline,
    pipeline_bytes,
)
from tests.conftest import tiny_config

BIG_BUDGET = 1 << 40
CPU = PipelineOptions("cpu", cpu_offload=True, vae_tiling=True, memory_budget_bytes=BIG_BUDGET)


def request(seed: int = 1, steps: int = 2, num_images: int = 1, strength: float = 1.0) -> InpaintRequest:
    return InpaintRequest("a red apple", "blurry", steps, 7.5, strength, seed, num_images)


def work_pair(height: int = 64, width: int = 96) -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[16:48, 24:64] = 255
    return image, mask


@pytest.fixture(scope="module")
def sd2(tiny_sd2_dir: Path) -> DiffusersInpainter:
    """An inpainter of its own (its own cache), over the tiny SD2 folder."""
    return DiffusersInpainter(ModelSource("tiny-sd2", tiny_sd2_dir), PipelineCache(CPU), "tiny sd2")


# --- loading -----------------------------------------------------------------------------------------


def test_sd2_and_sdxl_folders_load_as_their_inpainting_pipelines(tiny_sd2_dir: Path, tiny_sdxl_dir: Path) -> None:
    sd2_pipe = load_pipeline(ModelSource("tiny-sd2", tiny_sd2_dir), CPU)
    sdxl_pipe = load_pipeline(ModelSource("tiny-sdxl", tiny_sdxl_dir), CPU)
    assert isinstance(sd2_pipe, StableDiffusionInpaintPipeline)
    assert isinstance(sdxl_pipe, StableDiffusionXLInpaintPipeline)
    for pipe in (sd2_pipe, sdxl_pipe):
        assert pipe.unet.dtype == torch.float32  # fp32 on the CPU
        assert pipe.vae.use_tiling and pipe.vae.use_slicing
    no_tiling = PipelineOptions("cpu", True, vae_tiling=False, memory_budget_bytes=BIG_BUDGET)
    assert not load_pipeline(ModelSource("tiny-sd2", tiny_sd2_dir), no_tiling).vae.use_tiling


def test_build_engine_loads_a_local_folder_through_the_real_loader(sam_sd2_engine: Engine,
                                                                   tiny_sdxl_dir: Path,
                                                                   empty_models_dir: Path) -> None:
    inpainter = sam_sd2_engine.inpainter
    assert isinstance(inpainter, DiffusersInpainter)
    assert isinstance(inpainter.pipelines.get(inpainter.source), StableDiffusionInpaintPipeline)
    assert inpainter.native_size == 256  # sample_size 32 latents x 8
    sdxl_engine = build_engine(tiny_config(empty_models_dir, f"inpaint.model={tiny_sdxl_dir}"), show_progress=False)
    assert isinstance(sdxl_engine.inpainter.pipelines.get(sdxl_engine.inpainter.source),
                      StableDiffusionXLInpaintPipeline)
    assert sdxl_engine.inpainter.model_name == str(tiny_sdxl_dir)


def test_sdxl_edit_end_to_end(tiny_sdxl_dir: Path, empty_models_dir: Path) -> None:
    engine = build_engine(tiny_config(empty_models_dir, f"inpaint.model={tiny_sdxl_dir}"), show_progress=False)
    image, mask = work_pair(90, 130)
    result = engine.fill(image, mask, "a window", EditOptions(seed=2))
    out = result.images[0]
    band = masks.grow(mask, engine.composite.grow + engine.composite.feather) > 0
    assert out.shape == image.shape and np.array_equal(out[~band], image[~band])
    assert (out[mask > 0] != image[mask > 0]).any()


def test_cpu_loading_never_asks_for_cuda_offload(tiny_sd2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_offload(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("enable_model_cpu_offload called on a CPU-only machine")

    monkeypatch.setattr(DiffusionPipeline, "enable_model_cpu_offload", no_offload)
    pipe = load_pipeline(ModelSource("tiny-sd2", tiny_sd2_dir), CPU)  # cpu_offload=True in the options
    assert pipe.device.type == "cpu"


def test_broken_model_folders_are_one_line_errors(tiny_sd2_dir: Path, tmp_path: Path) -> None:
    only_index = tmp_path / "only-index"
    only_index.mkdir()
    shutil.copy(tiny_sd2_dir / "model_index.json", only_index / "model_index.json")
    no_unet = tmp_path / "no-unet"
    shutil.copytree(tiny_sd2_dir, no_unet)
    shutil.rmtree(no_unet / "unet")
    for folder in (only_index, no_unet):
        with pytest.raises(EditorError) as info:
            load_pipeline(ModelSource(folder.name, folder), CPU)
        assert "\n" not in str(info.value) and folder.name in str(info.value)
        with pytest.raises(EditorError) as info:
            DiffusersInpainter(ModelSource(folder.name, folder), PipelineCache(CPU), "x")
        assert "\n" not in str(info.value)


def test_memory_estimate_from_disk_matches_the_loaded_size(tiny_sd2_dir: Path, sd2: DiffusersInpainter) -> None:
    estimate = estimate_bytes(ModelSource("tiny-sd2", tiny_sd2_dir), torch.float32)
    actual = pipeline_bytes(sd2.pipelines.get(sd2.source))
    assert actual > 0 and abs(estimate - actual) / actual < 0.05


# --- generation --------------------------------------------------------------------------------------


def test_output_is_the_input_size_uint8(sd2: DiffusersInpainter) -> None:
    image, mask = work_pair(64, 96)
    [out] = sd2.inpaint(image, mask, request())
    assert out.shape == (64, 96, 3) and out.dtype == np.uint8


def test_progress_is_reported_once_per_step(sd2: DiffusersInpainter) -> None:
    image, mask = work_pair()
    calls: list[tuple[int, int]] = []
    sd2.inpaint(image, mask, request(steps=4), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    calls.clear()
    sd2.inpaint(image, mask, request(steps=10, strength=0.5), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 5) for i in range(1, 6)]  # strength 0.5 runs half of the steps


def test_cancel_stops_within_a_step(sd2: DiffusersInpainter) -> None:
    image, mask = work_pair()
    pipe = sd2.pipelines.get(sd2.source)
    unet_calls = [0]
    hook = pipe.unet.register_forward_hook(lambda *a: unet_calls.__setitem__(0, unet_calls[0] + 1))
    cancel = threading.Event()
    progress: list[int] = []

    def on_progress(done: int, total: int) -> None:
        progress.append(done)
        if done == 1:
            cancel.set()  # the person presses Cancel after the first step

    try:
        with pytest.raises(EditCancelled):
            sd2.inpaint(image, mask, request(steps=6), progress=on_progress, cancel=cancel)
    finally:
        hook.remove()
    assert progress == [1]
    assert unet_calls[0] == 2  # the step running when Cancel came finished; none after it
    # The pipeline is still usable afterwards.
    assert sd2.inpaint(image, mask, request())[0].shape == image.shape


def test_same_seed_same_image_other_seed_other_image(sd2: DiffusersInpainter) -> None:
    image, mask = work_pair()
    [a] = sd2.inpaint(image, mask, request(seed=7))
    [b] = sd2.inpaint(image, mask, request(seed=7))
    [c] = sd2.inpaint(image, mask, request(seed=8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_num_images_gives_that_many_variations(sd2: DiffusersInpainter) -> None:
    image, mask = work_pair()
    outs = sd2.inpaint(image, mask, request(num_images=2))
    assert len(outs) == 2
    assert all(out.shape == image.shape for out in outs)
    assert not np.array_equal(outs[0], outs[1])


# --- the shared pipeline cache ----------------------------------------------------------------------


def counting_loads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    loads: list[Path] = []
    real = inpainter_module.load_pipeline

    def counting(source, options):  # type: ignore[no-untyped-def]
        loads.append(source.path)
        return real(source, options)

    monkeypatch.setattr(inpainter_module, "load_pipeline", counting)
    return loads


def test_cache_loads_once_and_reuses(tiny_sd2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = counting_loads(monkeypatch)
    cache = PipelineCache(CPU)
    source = ModelSource("tiny-sd2", tiny_sd2_dir)
    first = cache.get(source)
    assert cache.get(source) is first
    assert cache.get(ModelSource("same folder, other name", tiny_sd2_dir)) is first
    assert loads == [tiny_sd2_dir] and cache.loaded() == [tiny_sd2_dir]


def test_cache_threads_share_one_load(tiny_sd2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = counting_loads(monkeypatch)
    cache = PipelineCache(CPU)
    source = ModelSource("tiny-sd2", tiny_sd2_dir)
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(source))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and all(p is got[0] for p in got)


def test_cache_releases_the_oldest_model_beyond_the_budget(tiny_sd2_dir: Path, tiny_sdxl_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    loads = counting_loads(monkeypatch)
    tiny = PipelineCache(PipelineOptions("cpu", True, True, memory_budget_bytes=1))
    sd2_source, sdxl_source = ModelSource("sd2", tiny_sd2_dir), ModelSource("sdxl", tiny_sdxl_dir)
    first = tiny.get(sd2_source)
    assert tiny.loaded() == [tiny_sd2_dir]
    tiny.get(sdxl_source)
    assert tiny.loaded() == [tiny_sdxl_dir]  # the first model was released
    assert tiny.get(sd2_source) is not first  # and is loaded again when asked for
    assert tiny.loaded() == [tiny_sd2_dir]
    assert len(loads) == 3

    roomy = PipelineCache(CPU)
    roomy.get(sd2_source)
    roomy.get(sdxl_source)
    roomy.get(sd2_source)  # used again: now the most recent
    assert roomy.loaded() == [tiny_sdxl_dir, tiny_sd2_dir]


def test_compiled_unet_sizes_are_padded_to_buckets_with_the_padding_kept() -> None:
    from editor.models.diffusers_inpaint import COMPILE_BUCKET, _pad_to_bucket

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (200, 328, 3), dtype=np.uint8)
    mask = np.full((200, 328), 255, np.uint8)
    padded, padded_mask = _pad_to_bucket(image, mask, COMPILE_BUCKET)
    assert padded.shape == (256, 384, 3) and padded_mask.shape == (256, 384)
    assert np.array_equal(padded[:200, :328], image) and np.array_equal(padded_mask[:200, :328], mask)
    assert not padded_mask[200:].any() and not padded_mask[:, 328:].any(), "the padding is never repainted"
    assert _pad_to_bucket(padded, padded_mask, COMPILE_BUCKET)[0] is padded


def test_out_of_memory_while_generating_is_one_line_of_advice(sd2: DiffusersInpainter,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The device running out of memory mid-edit tells the person what to change; the model stays usable."""
    unet = sd2.pipelines.get(sd2.source).unet

    def full_device(*args: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with monkeypatch.context() as patch:
        patch.setattr(type(unet), "forward", full_device)
        with pytest.raises(OutOfMemory, match="^out of GPU memory: make fewer variations"):
            sd2.inpaint(*work_pair(), request())
    assert sd2.inpaint(*work_pair(), request())[0].shape == (64, 96, 3)
