"""Shared models under concurrency: each request gets exactly what it would get alone."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from editor.build import Choice, Plan, build_engine, check_concurrency
from editor.models import registry
from editor.core.config import load_config
from editor.engine.ops import EditOptions, Engine
from editor.core.errors import ConfigError
from editor.models.base import InpaintRequest
from editor.models.diffusers_inpaint import DiffusersInpainter, ModelSource, PipelineCache, PipelineOptions
from editor.core.prompts import Prompts
from tests.conftest import tiny_config

CPU = PipelineOptions("cpu", cpu_offload=True, vae_tiling=True, memory_budget_bytes=1 << 40)


def work_pair(seed: int, height: int = 64, width: int = 64) -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[16:48, 8 + seed % 8:56] = 255
    return image, mask


def requests(count: int) -> list[InpaintRequest]:
    """Different step counts (the scheduler's timesteps differ in length) and seeds."""
    return [InpaintRequest(f"prompt {i}", "blurry", 2 + i % 5, 7.5, 1.0, 100 + i) for i in range(count)]


def run_concurrently(inpainter: DiffusersInpainter, jobs: list[tuple[np.ndarray, np.ndarray, InpaintRequest]]
                     ) -> list[np.ndarray]:
    """Every job at once, started together behind a barrier."""
    barrier = threading.Barrier(len(jobs))

    def work(job: tuple[np.ndarray, np.ndarray, InpaintRequest]) -> np.ndarray:
        barrier.wait()
        return inpainter.inpaint(*job)[0]

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(work, jobs))


@pytest.mark.parametrize("model", ["sd2", "sdxl"])
@pytest.mark.parametrize("threads, workers", [(2, 2), (8, 8), (8, 3)])
def test_concurrent_inpaints_each_give_the_image_of_the_same_request_alone(
        model: str, threads: int, workers: int, tiny_sd2_dir: Path, tiny_sdxl_dir: Path) -> None:
    folder = tiny_sd2_dir if model == "sd2" else tiny_sdxl_dir
    inpainter = DiffusersInpainter(ModelSource(model, folder), PipelineCache(CPU, workers), model)
    jobs = [(*work_pair(i), req) for i, req in enumerate(requests(threads))]
    alone = [inpainter.inpaint(*job)[0] for job in jobs]
    together = run_concurrently(inpainter, jobs)
    different = [i for i, (a, b) in enumerate(zip(alone, together)) if not np.array_equal(a, b)]
    assert different == [], f"{len(different)} of {threads} concurrent results differ from the same request alone"


def test_workers_share_the_weights_and_own_their_per_call_state(tiny_sdxl_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from editor.models import diffusers_inpaint as inpainter_module

    loads: list[Path] = []
    real = inpainter_module.load_pipeline
    monkeypatch.setattr(inpainter_module, "load_pipeline", lambda source, options: loads.append(source.path)
                        or real(source, options))
    cache = PipelineCache(CPU, workers=2)
    source = ModelSource("sdxl", tiny_sdxl_dir)
    with cache.checkout(source) as first, cache.checkout(source) as second:
        assert first is not second and type(first) is type(second)
        for name in ("unet", "vae", "text_encoder", "text_encoder_2"):  # one copy of the weights
            assert getattr(first, name) is getattr(second, name), name
        for name in ("scheduler", "tokenizer", "tokenizer_2"):  # state set during a call
            assert getattr(first, name) is not getattr(second, name), name
        assert dict(first.config) == dict(second.config)  # e.g. force_zeros_for_empty_prompt kept
        assert dict(first.scheduler.config) == dict(second.scheduler.config)
    assert loads == [tiny_sdxl_dir]


def test_a_caller_beyond_the_pool_waits_for_a_worker(tiny_sd2_dir: Path) -> None:
    cache = PipelineCache(CPU, workers=1)
    source = ModelSource("sd2", tiny_sd2_dir)
    got: list[object] = []
    with cache.checkout(source) as only:
        waiter = threading.Thread(target=lambda: got.append(cache.checkout(source).__enter__()))
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and got == [], "a second caller must not run the busy pipeline"
    waiter.join(timeout=10)
    assert got == [only]


def test_the_memory_budget_never_releases_a_pipeline_in_use(tiny_sd2_dir: Path, tiny_sdxl_dir: Path) -> None:
    cache = PipelineCache(PipelineOptions("cpu", True, True, memory_budget_bytes=1), workers=2)
    sd2, sdxl = ModelSource("sd2", tiny_sd2_dir), ModelSource("sdxl", tiny_sdxl_dir)
    with cache.checkout(sd2) as running:
        cache.get(sdxl)  # over the budget: sd2 would be released, but a call is running it
        assert cache.loaded() == [tiny_sd2_dir, tiny_sdxl_dir]
        image, mask = work_pair(0)
        assert running(prompt="x", image=Image.fromarray(image), mask_image=Image.fromarray(mask), height=64,
                       width=64, num_inference_steps=2, output_type="np").images.shape == (1, 64, 64, 3)
    assert cache.loaded() == [tiny_sdxl_dir], "released once its call ended, as the budget asks"


def test_cpu_offload_on_cuda_keeps_one_worker_and_a_higher_concurrency_is_refused(tiny_sd2_dir: Path) -> None:
    offload = PipelineOptions("cuda", cpu_offload=True, vae_tiling=True, memory_budget_bytes=1 << 40)
    assert PipelineCache(offload, workers=4).workers == 1
    assert PipelineCache(PipelineOptions("cuda", False, True, 1 << 40), workers=4).workers == 4
    sdxl = registry.get("sdxl")
    plan = Plan("cuda", Choice("segmenter", "grabcut", registry.get("grabcut")), Choice("eraser", "generative", None),
                Choice("inpainter", "sdxl", sdxl, tiny_sd2_dir), Choice("detector", "none", None))
    with pytest.raises(ConfigError) as refused:
        check_concurrency(load_config(None, ["server.concurrency=4"]), plan)
    message = str(refused.value)
    assert "\n" not in message and "inpaint.cpu_offload=false" in message and "server.concurrency=1" in message
    check_concurrency(load_config(None, ["server.concurrency=4", "inpaint.cpu_offload=false"]), plan)
    check_concurrency(load_config(None, ["server.concurrency=1"]), plan)
    no_model = replace(plan, inpaint=Choice("inpainter", "none", None))
    check_concurrency(load_config(None, ["server.concurrency=4"]), no_model)  # nothing to share
    check_concurrency(load_config(None, ["server.concurrency=4"]), replace(plan, device="cpu"))


def test_the_app_refuses_an_unsafe_concurrency_at_start_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     tiny_sd2_dir: Path) -> None:
    import torch

    import app

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU, as far as the settings check goes
    built: list[object] = []
    monkeypatch.setattr("editor.build.build_engine", lambda *a, **k: built.append(a))
    assert app.main(["--set", f"models_dir={tmp_path}", "--set", f"inpaint.model={tiny_sd2_dir}",
                     "--set", "server.concurrency=3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: server.concurrency=3") and err.count("\n") == 1 and built == []


def test_an_engine_at_concurrency_4_gives_each_fill_its_own_result(tiny_sd2_dir: Path, empty_models_dir: Path,
                                                                   photo: np.ndarray) -> None:
    engine = build_engine(tiny_config(empty_models_dir, f"inpaint.model={tiny_sd2_dir}", "server.concurrency=4"),
                          show_progress=False)
    assert engine.inpainter.pipelines.workers == 4
    masks_ = [np.zeros(photo.shape[:2], np.uint8) for _ in range(6)]
    for i, mask in enumerate(masks_):
        mask[40 + 10 * i:120 + 10 * i, 60 + 20 * i:140 + 20 * i] = 255
    options = [EditOptions(seed=10 + i, steps=2 + i % 3) for i in range(6)]
    alone = [engine.fill(photo, m, f"thing {i}", o).images[0] for i, (m, o) in enumerate(zip(masks_, options))]
    barrier = threading.Barrier(6)

    def work(i: int) -> np.ndarray:
        barrier.wait()
        return engine.fill(photo, masks_[i], f"thing {i}", options[i]).images[0]

    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(work, range(6)))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))


# --- the segmenter and the detector: one call at a time, under a lock ---------------------------------


def test_two_people_clicking_on_two_photos_each_get_their_own_mask(sam_sd2_engine: Engine) -> None:
    photos = [work_pair(1, 90, 120)[0], work_pair(2, 120, 90)[0]]
    clicks = [[(20 + 7 * k, 30 + 5 * k) for k in range(5)], [(60 - 6 * k, 15 + 9 * k) for k in range(5)]]

    def session(i: int, barrier: threading.Barrier | None = None) -> list[np.ndarray]:
        prompts, masks_ = Prompts(), []
        for x, y in clicks[i]:
            if barrier is not None:
                barrier.wait()  # both people click at the same moment, every time
            prompts = prompts.add_point(x, y, positive=len(masks_) != 2)
            masks_.append(sam_sd2_engine.select(photos[i], prompts))
        return masks_

    alone = [session(0), session(1)]
    barrier = threading.Barrier(2)
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda i: session(i, barrier), range(2)))
    for person in range(2):
        assert all(np.array_equal(a, b) for a, b in zip(alone[person], together[person]))


def test_two_threads_detecting_on_two_photos_each_get_their_own_boxes(empty_models_dir: Path,
                                                                       tiny_detector_dir: Path) -> None:
    engine = build_engine(tiny_config(empty_models_dir, f"detector.model={tiny_detector_dir}",
                                      "detector.box_threshold=0", "detector.text_threshold=0"), show_progress=False)
    photos = [work_pair(3, 200, 150)[0], work_pair(4, 120, 260)[0]]
    queries = ["dog", "person, car"]
    alone = [engine.detect(p, q) for p, q in zip(photos, queries)]
    barrier = threading.Barrier(2)

    def work(i: int) -> list[object]:
        barrier.wait()
        return [engine.detect(photos[i], queries[i]) for _ in range(3)]

    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(work, range(2)))
    assert all(found == alone[i] for i in range(2) for found in together[i])


def test_an_sdxl_fp16_vae_that_upcasts_itself_gets_a_copy_per_worker(tiny_sdxl_dir: Path, tiny_sd2_dir: Path) -> None:
    """SDXL casts such a VAE to fp32 and back during a call: shared, one call would cast it under another."""
    import torch

    from editor.models.diffusers_inpaint import load_pipeline, worker_pipeline

    sdxl = load_pipeline(ModelSource("sdxl", tiny_sdxl_dir), CPU)
    assert worker_pipeline(sdxl).vae is sdxl.vae  # fp32: nothing is cast, one VAE for all
    sdxl.vae.to(torch.float16)
    assert sdxl.vae.config.force_upcast
    copy = worker_pipeline(sdxl).vae
    assert copy is not sdxl.vae and copy.dtype == torch.float16
    sd2 = load_pipeline(ModelSource("sd2", tiny_sd2_dir), CPU)
    sd2.vae.to(torch.float16)
    assert worker_pipeline(sd2).vae is sd2.vae  # the SD 2 pipeline never casts its VAE
