"""Shared models under concurrency: each request gets exactly what it would get alone."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from editor.inpainter import DiffusersInpainter, InpaintRequest, ModelSource, PipelineCache, PipelineOptions

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
