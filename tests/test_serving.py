"""serving.backend: ray: the tiny models as Ray Serve deployments on a local Ray started once for this module.

The same pixels as the local backend, clicks that cost one encoder run across two segmenter
replicas, streamed progress and cancel, a full queue, a replica killed mid-request, a short load test.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from editor.core.config import Config
from editor.core.errors import ConfigError, EditCancelled, EditorError
from editor.core.prompts import Prompts
from editor.engine.ops import EditOptions, Engine
from editor.serving import cluster
from tests.conftest import ROOT, tiny_config
from tests.tiny_models import write_tiny_setup

STEPS = 40  # a generation long enough to be cancelled, queued behind, or killed during


def _settings(tiny_sam_path: Path, tiny_sd2_dir: Path, models: Path, *extra: str) -> Config:
    return tiny_config(models, f"segmenter.model={tiny_sam_path}", f"inpaint.model={tiny_sd2_dir}",
                       "eraser.model=opencv", "serving.app_name=test-editor",
                       "serving.segmenter.num_replicas=2", "serving.segmenter.num_cpus=0.25",
                       "serving.eraser.num_cpus=0.25", "serving.inpainter.num_cpus=0.25",
                       "serving.inpainter.max_ongoing_requests=1", "serving.inpainter.max_queued_requests=1",
                       *extra)


@pytest.fixture(scope="module")
def served(tiny_sam_path: Path, tiny_sd2_dir: Path, empty_models_dir: Path) -> Iterator[tuple[Engine, Engine]]:
    """(the engine over the deployments, the same settings' engine in this process)."""
    from editor.build import build_engine

    config = _settings(tiny_sam_path, tiny_sd2_dir, empty_models_dir, "serving.backend=ray")
    cluster.start_ray(config, object_store_bytes=100 * 1024**2)
    import ray
    from ray import serve

    try:
        assert cluster.deploy(config) == ["segmenter", "eraser", "inpainter"]
        local = build_engine(_settings(tiny_sam_path, tiny_sd2_dir, empty_models_dir), show_progress=False)
        yield build_engine(config), local
    finally:
        serve.shutdown()
        ray.shutdown()


@contextmanager
def _one_thread() -> Iterator[None]:
    """Ray gives a replica with num_cpus below 1 one thread: the local run must sum in the same order."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_select_fill_and_erase_through_the_deployments_give_the_local_pixels(served: tuple[Engine, Engine],
                                                                              photo: np.ndarray) -> None:
    remote, local = served
    prompts = Prompts(((160.0, 120.0),), (1,))
    mask = local.select(photo, prompts)
    assert np.array_equal(remote.select(photo, prompts), mask) and mask.any()
    options = EditOptions(seed=7)
    steps: list[tuple[int, int]] = []
    with _one_thread():
        filled_here = local.fill(photo, mask, "a blue ball", options)
        erased_here = local.erase(photo, mask, options)
    filled = remote.fill(photo, mask, "a blue ball", options, progress=lambda done, total: steps.append((done, total)))
    assert [image.tobytes() for image in filled.images] == [image.tobytes() for image in filled_here.images]
    assert steps[-1] == (2, 2)  # the remote denoising steps reached the caller's progress
    erased = remote.erase(photo, mask, options)
    assert np.array_equal(erased.images[0], erased_here.images[0])
    assert remote.status().inpainter == local.status().inpainter  # the replicas' own status lines


def test_ten_clicks_on_one_photo_cost_one_encoder_run_across_two_replicas(served: tuple[Engine, Engine]) -> None:
    remote = served[0]
    segmenter = remote.segmenter
    for seed in (1, 2, 3):  # three new photos: each is encoded once, whichever replica a click reaches
        image = np.random.default_rng(seed).integers(0, 255, (200, 260, 3), dtype=np.uint8)
        image.setflags(write=False)
        before = dict(segmenter.encoder_runs)
        points: list[tuple[float, float]] = []
        for click in range(10):
            points.append((20.0 + 20 * click, 30.0 + 15 * click))
            remote.select(image, Prompts(tuple(points), (1,) * len(points)))
        runs = sum(count - before.get(replica, 0) for replica, count in segmenter.encoder_runs.items())
        assert runs == 1, segmenter.encoder_runs


def test_cancel_stops_the_remote_generation_within_a_step(served: tuple[Engine, Engine], photo: np.ndarray) -> None:
    remote = served[0]
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[80:160, 100:220] = 255
    cancel = threading.Event()
    steps: list[int] = []

    def step(done: int, total: int) -> None:
        steps.append(done)
        cancel.set()

    with pytest.raises(EditCancelled):
        remote.fill(photo, mask, "a cat", EditOptions(seed=1, steps=STEPS), progress=step, cancel=cancel)
    assert len(steps) < STEPS
    assert remote.fill(photo, mask, "a cat", EditOptions(seed=1)).images  # the replica is free for the next


def test_a_full_queue_says_busy_in_one_line(served: tuple[Engine, Engine], photo: np.ndarray) -> None:
    remote = served[0]  # the inpainter: one request running, one queued, the rest refused
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[80:160, 100:220] = 255
    errors: list[str] = []

    def fill() -> None:
        try:
            remote.fill(photo, mask, "a dog", EditOptions(seed=2, steps=STEPS))
        except EditorError as exc:
            errors.append(str(exc))

    workers = [threading.Thread(target=fill) for _ in range(4)]
    for worker in workers:
        worker.start()
        time.sleep(0.3)
    for worker in workers:
        worker.join(timeout=300)
    assert errors and all("busy" in error and "\n" not in error for error in errors), errors
    assert len(errors) < 4  # the running and the queued request finished


def test_a_page_without_deployments_is_told_in_one_line(served: tuple[Engine, Engine], tiny_sam_path: Path,
                                                        tiny_sd2_dir: Path, empty_models_dir: Path) -> None:
    config = _settings(tiny_sam_path, tiny_sd2_dir, empty_models_dir, "serving.backend=ray",
                       "serving.app_name=nothing-here")
    with pytest.raises(ConfigError, match="python -m editor serve.*serving.backend=local"):
        cluster.remote_engine(config)


def test_the_manifests_import_paths_build_the_deployments_a_page_finds(served: tuple[Engine, Engine],
                                                                        tiny_sam_path: Path, empty_models_dir: Path,
                                                                        tmp_path: Path, photo: np.ndarray) -> None:
    """deploy/rayservice.yaml's segmenter application, built as Serve builds a config file's (import
    path and args), under its own name: a page with the default app_name finds it and selects."""
    import yaml
    from ray import serve
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from editor.build import build_engine

    service = next(doc for doc in yaml.safe_load_all((ROOT / "deploy" / "rayservice.yaml").read_text())
                   if doc["kind"] == "RayService")
    apps = {app["name"]: app for app in yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]}
    manifest = apps["photo-editor-segmenter"]
    settings = tmp_path / "config.yaml"  # what /app/config.yaml holds in the image, here the tiny SAM
    settings.write_text(f"device: cpu\nmodels_dir: {empty_models_dir}\nauto_download: false\n"
                        f"segmenter:\n  model: {tiny_sam_path}\n", encoding="utf-8")
    args = {**manifest["args"], "config": str(settings), "set": ["serving.segmenter.num_cpus=0.25"]}
    application = call_user_app_builder_with_args_if_necessary(import_attr(manifest["import_path"]), args)
    serve.run(application, name=manifest["name"], route_prefix=None)
    try:
        page = build_engine(tiny_config(empty_models_dir, f"segmenter.model={tiny_sam_path}", "serving.backend=ray"))
        prompts = Prompts(((160.0, 120.0),), (1,))
        assert np.array_equal(page.select(photo, prompts), served[1].select(photo, prompts))
        assert serve.status().applications[manifest["name"]].deployments.keys() == {
            deployment["name"] for deployment in manifest["deployments"]}
    finally:
        serve.delete(manifest["name"])


def test_the_inpainting_models_share_one_deployment_each_request_painted_by_the_one_it_names(
        served: tuple[Engine, Engine], tiny_sam_path: Path, tiny_sd2_dir: Path, tiny_sdxl_dir: Path,
        empty_models_dir: Path, photo: np.ndarray) -> None:
    """inpaint.models on Ray: one inpainter application holds both models (one pipeline cache); a page
    over the deployments offers both, and a fill paints as the model it names does in the app."""
    from ray import serve

    from editor.build import build_engine
    from editor.serving.remote import RemoteInpainter

    config = _settings(tiny_sam_path, tiny_sd2_dir, empty_models_dir, "serving.backend=ray",
                       "serving.app_name=test-pool", "serving.segmenter.num_replicas=1",
                       f"inpaint.models=[{tiny_sdxl_dir}]")
    try:
        assert cluster.deploy(config) == ["segmenter", "eraser", "inpainter"]
        page = build_engine(config)
        assert isinstance(page.inpainter.default, RemoteInpainter)
        assert page.inpaint_models() == (str(tiny_sd2_dir), str(tiny_sdxl_dir))
        mask = np.zeros(photo.shape[:2], np.uint8)
        mask[60:140, 100:220] = 255
        for model in (tiny_sd2_dir, tiny_sdxl_dir):
            here = build_engine(tiny_config(empty_models_dir, f"inpaint.model={model}"), show_progress=False)
            with _one_thread():
                expected = here.fill(photo, mask, "a red ball", EditOptions(seed=11)).images[0]
            filled = page.fill(photo, mask, "a red ball", EditOptions(seed=11, model=str(model)))
            assert np.array_equal(filled.images[0], expected) and filled.metadata["model"] == str(model)
    finally:
        for kind in ("segmenter", "eraser", "inpainter"):
            serve.delete(cluster.app_name(config, kind))


def test_a_replica_killed_mid_generation_fails_in_one_line_and_is_replaced(served: tuple[Engine, Engine],
                                                                          photo: np.ndarray) -> None:
    import ray

    remote = served[0]
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[80:160, 100:220] = 255
    started = threading.Event()
    outcome: list[object] = []

    def fill() -> None:
        try:
            outcome.append(remote.fill(photo, mask, "a boat", EditOptions(seed=3, steps=STEPS),
                                       progress=lambda done, total: started.set()))
        except EditorError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=fill)
    worker.start()
    assert started.wait(120)
    name = next(actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
                if "test-editor-inpainter" in actor["name"])
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    worker.join(timeout=120)
    failure = outcome[0]
    assert isinstance(failure, EditorError) and "\n" not in str(failure), failure
    deadline = time.monotonic() + 120
    while True:  # Serve starts a new replica; the next edit works
        try:
            assert remote.fill(photo, mask, "a boat", EditOptions(seed=3)).images
            break
        except EditorError:
            assert time.monotonic() < deadline, "the inpainter was not replaced"
            time.sleep(1)


def test_a_short_load_test_on_ray_has_no_failures(tmp_path: Path) -> None:
    config = write_tiny_setup(tmp_path / "tiny")
    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, "-m", "editor", "loadtest", "--backend", "ray", "--config", str(config),
                           "--set", "serving.app_name=loadtest-editor", "--users", "2", "--spawn-rate", "2",
                           "--run-time", "6", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["backend"] == "ray" and report["failures"] == 0 and report["requests"] > 0
    assert report["endpoints"]["/fill"]["requests"] + report["endpoints"]["/erase"]["requests"] > 0
