"""deploy/rayservice.yaml parses and holds what a GPU cluster needs: the Serve apps, GPU requests, the page."""
from __future__ import annotations

from pathlib import Path

import yaml

MANIFEST = Path(__file__).resolve().parent.parent / "deploy" / "rayservice.yaml"
KINDS = {"segmenter", "eraser", "inpainter", "detector", "upscaler"}


def documents() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8"))}


def test_the_rayservice_declares_every_kind_with_gpus_and_autoscaling() -> None:
    service = documents()["RayService"]
    assert service["apiVersion"] == "ray.io/v1"
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    apps = {app["name"]: app for app in serve["applications"]}
    assert set(apps) == {f"photo-editor-{kind}" for kind in KINDS}  # serving.app_name-KIND: what the pages look for
    for name, app in apps.items():
        kind = name.removeprefix("photo-editor-")
        assert app["import_path"] == f"editor.serving.cluster:{kind}_app" and "config" in app["args"]
        (deployment,) = app["deployments"]
        assert deployment["name"] == kind
        scaling = deployment["autoscaling_config"]
        assert 0 <= scaling["min_replicas"] <= scaling["max_replicas"]
        assert 0 < deployment["ray_actor_options"]["num_gpus"] <= 1
        assert deployment["max_queued_requests"] > 0
    shared = [apps[f"photo-editor-{k}"]["deployments"][0]["ray_actor_options"]["num_gpus"] for k in ("segmenter", "eraser")]
    assert sum(shared) <= 1  # the segmenter and the eraser fit on one GPU together


def test_the_cluster_has_a_head_without_gpus_and_a_gpu_worker_group() -> None:
    cluster = documents()["RayService"]["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    (gpu,) = cluster["workerGroupSpecs"]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1" and gpu["minReplicas"] <= gpu["maxReplicas"]


def test_the_page_runs_against_the_ray_backend_behind_a_service() -> None:
    docs = documents()
    command = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["sh", "-c"]
    line = command[2]  # the pod joins the cluster as a node without resources, then the page finds it
    assert line.startswith("ray start --address=photo-editor-head-svc:6379 --num-cpus=0")
    assert "python app.py" in line and "serving.backend=ray" in line and "serving.ray_address=auto" in line
    assert docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
