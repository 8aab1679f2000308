"""Start the app (and, for Ray, the deployments) on loopback, run Locust headless against it, stop all, report."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import requests

from editor.core.errors import EditorError

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
KINDS = ("segmenter", "eraser", "inpainter", "detector", "upscaler")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
INSTALL = "locust is not installed: pip install -r requirements-dev.txt (or pip install locust==2.47.0)"


@dataclass(frozen=True)
class Plan:
    users: int
    spawn_rate: float
    run_time_s: int
    backend: str
    config: str | None
    overrides: list[str]
    url: str | None
    photo: Path
    models: tuple[str, ...] = ()  # the inpainting models fills take turns with; () the default
    start_timeout_s: float = 300


def check_loopback(url: str) -> str:
    """The URL with a trailing slash, or one line refusing a non-loopback address."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or parsed.hostname not in LOOPBACK:
        raise EditorError(f"--url must be a loopback address (http://127.0.0.1:PORT/), not {url!r}")
    return url.rstrip("/") + "/"


def summary(stats_csv: Path, plan: Plan, replicas: dict[str, int]) -> dict:
    """The JSON report from Locust's `_stats.csv`: the aggregated row plus one row per endpoint."""
    with stats_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    total = next(row for row in rows if row["Name"] == "Aggregated")

    def row(r: dict) -> dict:
        return {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                "p50_ms": float(r["50%"]), "p95_ms": float(r["95%"]), "rps": round(float(r["Requests/s"]), 3)}

    return {"backend": plan.backend, "replicas": replicas, "users": plan.users, "run_time_s": plan.run_time_s,
            **row(total), "endpoints": {r["Name"]: row(r) for r in rows if r["Name"] != "Aggregated"}}


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(stack: ExitStack, argv: list[str], log: Path) -> subprocess.Popen:
    """A child in its own process group, stopped (the whole group) when the stack closes."""
    handle = log.open("w")
    process = subprocess.Popen(argv, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    stack.callback(handle.close)
    stack.callback(stop, process)
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def wait_until(ready, process: subprocess.Popen, log: Path, what: str, timeout: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise EditorError(f"{what} stopped before it was ready: {tail[0]}")
        if ready():
            return
        time.sleep(0.5)
    raise EditorError(f"{what} was not ready after {timeout:.0f} s (its log: {log})")


def answers(url: str) -> bool:
    try:
        return requests.get(f"{url}config", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def settings_args(plan: Plan) -> list[str]:
    args = ["--config", plan.config] if plan.config else []
    for item in plan.overrides:
        args += ["--set", item]
    return args


def served_address(log: Path) -> str | None:
    """The Ray address in `python -m editor serve`'s `ready:` line, once it has said it."""
    for line in log.read_text(errors="replace").splitlines():
        found = re.search(r"serving\.ray_address=(\S+)", line) if line.startswith("ready:") else None
        if found:
            return found.group(1)
    return None


def start_app(stack: ExitStack, plan: Plan, logs: Path) -> str:
    """`python -m editor serve` first for Ray (its `ready:` line), then `python app.py`; the app's URL."""
    settings = settings_args(plan)
    if plan.backend == "ray":
        settings += ["--set", "serving.backend=ray"]
        serve = start(stack, [sys.executable, "-m", "editor", "serve", *settings], logs / "serve.log")
        wait_until(lambda: served_address(logs / "serve.log") is not None, serve, logs / "serve.log",
                   "python -m editor serve", plan.start_timeout_s)
        settings += ["--set", f"serving.ray_address={served_address(logs / 'serve.log')}"]  # this run's Ray, no other
    port = free_port()
    app = start(stack, [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), *settings],
                logs / "app.log")
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: answers(url), app, logs / "app.log", "the app", plan.start_timeout_s)
    return url


def run_locust(plan: Plan, url: str, csv_prefix: Path, logs: Path, stack: ExitStack) -> None:
    from PIL import Image

    with Image.open(plan.photo) as image:
        size = list(image.size)
    env = {"LOADTEST_PHOTO": str(plan.photo.resolve()), "LOADTEST_SIZE": json.dumps(size),
           "LOADTEST_MODELS": json.dumps(list(plan.models))}
    os.environ.update(env)  # inherited by the Locust child
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
            "--users", str(plan.users), "--spawn-rate", str(plan.spawn_rate), "--run-time", f"{plan.run_time_s}s",
            "--stop-timeout", "120", "--csv", str(csv_prefix), "--only-summary", "--loglevel", "WARNING"]
    locust = start(stack, argv, logs / "locust.log")
    code = locust.wait()
    if not Path(f"{csv_prefix}_stats.csv").is_file():  # code 1 with the CSV only means some requests failed
        tail = (logs / "locust.log").read_text(errors="replace").strip().splitlines()[-1:] or [f"exit {code}"]
        raise EditorError(f"locust did not finish: {tail[0]}")


def replicas_of(config: object, backend: str) -> dict[str, int]:
    """Per kind: the Ray deployment's num_replicas, or 1 (in the app's process) for the local backend."""
    serving = getattr(config, "serving", None)
    if backend != "ray" or serving is None:
        return dict.fromkeys(KINDS, 1)
    return {kind: getattr(getattr(serving, kind, None), "num_replicas", 1) for kind in KINDS}


def run(plan: Plan, config: object, json_path: Path | None, csv_prefix: str | None) -> dict:
    if importlib.util.find_spec("locust") is None:  # never imported here: gevent would patch this process
        raise EditorError(INSTALL)
    if plan.users < 1 or plan.run_time_s < 1 or plan.spawn_rate <= 0:
        raise EditorError("--users and --run-time must be at least 1 and --spawn-rate above 0")
    if not plan.photo.is_file():
        raise EditorError(f"photo not found: {plan.photo}")
    url = check_loopback(plan.url) if plan.url else None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="editor-loadtest-") as temp, ExitStack() as stack:
            logs = Path(temp)
            prefix = Path(csv_prefix) if csv_prefix else logs / "locust"
            prefix.parent.mkdir(parents=True, exist_ok=True)
            url = url or start_app(stack, plan, logs)
            run_locust(plan, url, prefix, logs, stack)
            report = summary(Path(f"{prefix}_stats.csv"), plan, replicas_of(config, plan.backend))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if json_path:
        write_json(report, json_path)
    return report


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the children as Ctrl+C does
