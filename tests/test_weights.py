"""Tests for editor.models.weights against a throwaway HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from editor.build import hub_entry
from editor.models import registry, weights
from editor.core.errors import EditorError, ModelUnavailableError

PAYLOAD = bytes((i * 31 + i // 251) % 256 for i in range(300_000))
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
CHUNK = 16 * 1024


@dataclass
class ServerState:
    payload: bytes = PAYLOAD
    cut_after: int | None = None  # one-shot: drop the connection after this many body bytes
    ignore_range: bool = False  # answer 200 with the whole body, like servers without Range support
    status: int | None = None  # force an error status
    range_offset: int = 0  # answer a Range request this many bytes off (a misbehaving server)
    stall_after: int | None = None  # send this many body bytes, then go silent for a while
    requests: list[dict[str, str | None]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        state = self.server.state
        state.requests.append({"path": self.path, "range": self.headers.get("Range")})
        if state.status is not None:
            self.send_error(state.status)
            return
        body, start, size = state.payload, 0, len(state.payload)
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not state.ignore_range:
            start = int(match.group(1)) + state.range_offset
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        body = body[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.cut_after is not None:
            body, state.cut_after = body[: state.cut_after], None
        if state.stall_after is not None:
            self.wfile.write(body[: state.stall_after])
            self.wfile.flush()
            time.sleep(1.5)  # longer than the client's timeout in the test
            return
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState


@dataclass
class Served:
    url: str
    state: ServerState


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture
def served() -> Iterator[Served]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = ServerState()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{server.server_address[1]}/sam_vit_b_01ec64.pth", server.state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _download(url: str, dest: Path, sha256: str | None = PAYLOAD_SHA) -> Path:
    return weights.download_file(url, dest, sha256, timeout=5, chunk_size=CHUNK, show_progress=False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _single_line(exc: pytest.ExceptionInfo[EditorError]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


# --------------------------------------------------------------------------- download_file


def test_full_download_is_exact_and_verified(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "sam_vit_b_01ec64.pth"
    assert _download(served.url, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert weights.verify_sha256(dest, PAYLOAD_SHA)
    assert weights.file_sha256(dest) == PAYLOAD_SHA
    assert not dest.with_suffix(".pth.part").exists()
    assert served.state.requests == [{"path": "/sam_vit_b_01ec64.pth", "range": None}]


def test_interrupted_download_resumes_with_range(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "sam_vit_b_01ec64.pth"
    part = tmp_path / "sam_vit_b_01ec64.pth.part"
    served.state.cut_after = 100_000
    with pytest.raises(EditorError) as exc:
        _download(served.url, dest)
    assert served.url in _single_line(exc)
    assert not dest.exists()
    assert part.exists()
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD)
    assert part.read_bytes() == PAYLOAD[:kept]

    _download(served.url, dest)
    assert served.state.requests[-1]["range"] == f"bytes={kept}-"
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "sam_vit_b_01ec64.pth"
    dest.with_suffix(".pth.part").write_bytes(PAYLOAD[:50_000])
    served.state.ignore_range = True
    _download(served.url, dest)
    assert served.state.requests[-1]["range"] == "bytes=50000-"
    assert dest.read_bytes() == PAYLOAD


def test_resume_at_wrong_offset_restarts(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "sam_vit_b_01ec64.pth"
    dest.with_suffix(".pth.part").write_bytes(PAYLOAD[:50_000])
    served.state.range_offset = 1000
    _download(served.url, dest)
    assert [r["range"] for r in served.state.requests] == ["bytes=50000-", None]
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_answered_416_is_finished(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "sam_vit_b_01ec64.pth"
    dest.with_suffix(".pth.part").write_bytes(PAYLOAD)
    _download(served.url, dest)
    assert served.state.requests[-1]["range"] == f"bytes={len(PAYLOAD)}-"
    assert dest.read_bytes() == PAYLOAD


def test_oversized_part_is_discarded(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "sam_vit_b_01ec64.pth"
    dest.with_suffix(".pth.part").write_bytes(PAYLOAD + b"junk")
    _download(served.url, dest)
    assert dest.read_bytes() == PAYLOAD


def test_wrong_checksum_raises_and_leaves_nothing(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "sam_vit_b_01ec64.pth"
    with pytest.raises(EditorError) as exc:
        _download(served.url, dest, sha256="0" * 64)
    message = _single_line(exc)
    assert message.startswith("checksum mismatch for sam_vit_b_01ec64.pth: expected 000")
    assert PAYLOAD_SHA in message
    assert not dest.exists()
    assert not dest.with_suffix(".pth.part").exists()


def test_existing_verified_file_needs_no_request(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "sam_vit_b_01ec64.pth"
    dest.write_bytes(PAYLOAD)
    assert _download(served.url, dest) == dest
    assert served.state.requests == []


def test_existing_corrupt_file_is_replaced(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "sam_vit_b_01ec64.pth"
    dest.write_bytes(b"not a checkpoint")
    _download(served.url, dest)
    assert dest.read_bytes() == PAYLOAD


def test_offline_raises_without_request(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as exc:
        _download(served.url, tmp_path / "sam_vit_b_01ec64.pth")
    assert _single_line(exc) == f"HF_HUB_OFFLINE=1 is set: not downloading {served.url}"
    assert served.state.requests == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("TRUE", True), ("yes", True), ("On", True), ("0", False), ("", False), ("no", False)],
)
def test_offline_values(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert weights.offline() is expected


def test_unreachable_port_fails_fast(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/sam_vit_b_01ec64.pth"
    started = time.monotonic()
    with pytest.raises(EditorError) as exc:
        _download(url, tmp_path / "sam_vit_b_01ec64.pth")
    assert time.monotonic() - started < 3
    assert url in _single_line(exc)


def test_stalled_server_times_out_and_keeps_part(served: Served, tmp_path: Path) -> None:
    dest = tmp_path / "sam_vit_b_01ec64.pth"
    served.state.stall_after = 40_000
    started = time.monotonic()
    with pytest.raises(EditorError) as exc:
        weights.download_file(
            served.url, dest, PAYLOAD_SHA, timeout=0.3, chunk_size=CHUNK, show_progress=False
        )
    assert time.monotonic() - started < 1.5
    assert "run again to resume" in _single_line(exc)
    assert dest.with_suffix(".pth.part").stat().st_size == 40_000


def test_http_error_is_one_line(served: Served, tmp_path: Path) -> None:
    served.state.status = 404
    with pytest.raises(EditorError) as exc:
        _download(served.url, tmp_path / "sam_vit_b_01ec64.pth")
    message = _single_line(exc)
    assert served.url in message and "404" in message


# --------------------------------------------------------------------------- registry entries


def _entry(url: str, sha256: str | None = PAYLOAD_SHA, md5: str | None = None) -> registry.ModelEntry:
    source = registry.Source(url=url, filename="tiny.pth", sha256=sha256, md5=md5)
    return registry.ModelEntry("tiny", "segmenter", "tiny", "sam", source, 1, "Apache-2.0")


def test_every_file_entry_has_a_published_checksum() -> None:
    for entry in registry.entries():
        if entry.source is not None and entry.source.url is not None:
            assert entry.source.url.endswith("/" + entry.source.filename)
            assert re.fullmatch(r"[0-9a-f]{64}", entry.source.sha256 or "") or re.fullmatch(
                r"[0-9a-f]{32}", entry.source.md5 or ""), entry.name


def test_fetch_downloads_an_entry_into_models_dir_verified(served: Served, tmp_path: Path) -> None:
    models_dir = tmp_path / "new" / "models"
    entry = _entry(served.url)
    assert weights.local_path(entry, models_dir) is None
    path = weights.fetch(entry, models_dir, show_progress=False)
    assert path == models_dir / "tiny.pth" and path.read_bytes() == PAYLOAD
    assert weights.local_path(entry, models_dir) == path
    requests = len(served.state.requests)
    assert weights.fetch(entry, models_dir, show_progress=False) == path and len(served.state.requests) == requests


def test_fetch_refuses_a_file_whose_checksum_differs(served: Served, tmp_path: Path) -> None:
    with pytest.raises(EditorError) as exc:
        weights.fetch(_entry(served.url, sha256="0" * 64), tmp_path, show_progress=False)
    assert "checksum mismatch" in _single_line(exc) and not (tmp_path / "tiny.pth").exists()
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    assert weights.fetch(_entry(served.url, None, md5), tmp_path, show_progress=False).read_bytes() == PAYLOAD


def test_fetch_reports_progress_and_forgets_it_when_done(served: Served, tmp_path: Path) -> None:
    seen: list[list[str]] = []

    class Watching(weights.Downloads):
        def update(self, name: str, done: int, total: int | None) -> None:
            super().update(name, done, total)
            seen.append(self.lines())

    downloads = Watching()
    weights.fetch(_entry(served.url), tmp_path, show_progress=False, downloads=downloads)
    assert seen[-1] == ["downloading tiny: 100%"] and ["downloading tiny: 0%"] in seen
    assert downloads.lines() == []


def test_offline_fetch_names_the_command(served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as exc:
        weights.fetch(_entry(served.url), tmp_path, show_progress=False)
    assert "python -m editor download tiny" in _single_line(exc) and served.state.requests == []


def test_a_refusing_port_is_unreachable_at_once() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        started = time.monotonic()
        why = weights.unreachable(f"http://127.0.0.1:{port}/x", timeout=2)
    assert why is not None and "127.0.0.1" in why and time.monotonic() - started < 1


def test_an_address_that_never_answers_is_unreachable_within_the_timeout() -> None:
    started = time.monotonic()
    why = weights.unreachable("https://10.255.255.1/model.pth", timeout=1.0)  # a blackhole (or no route)
    if why is None:
        pytest.skip("this network answers for every address (a transparent proxy)")
    assert "10.255.255.1" in why and time.monotonic() - started < 3


def test_a_listening_server_is_reachable(served: Served) -> None:
    assert weights.unreachable(served.url) is None


# --------------------------------------------------------------------------- inpainting / Hub


REPO_FILES = [
    "model_index.json",
    "512-inpainting-ema.ckpt",
    "512-inpainting-ema.safetensors",
    "README.md",
    "scheduler/scheduler_config.json",
    "tokenizer/merges.txt",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.bin",
    "text_encoder/model.safetensors",
    "text_encoder/model.fp16.safetensors",
]


def _selected(patterns: tuple[list[str], list[str]]) -> set[str]:
    from huggingface_hub.utils import filter_repo_objects

    allow, ignore = patterns
    return set(filter_repo_objects(REPO_FILES, allow_patterns=allow, ignore_patterns=ignore or None))


def test_hub_patterns_with_variant() -> None:
    allow, ignore = weights.hub_allow_patterns("fp16")
    assert allow == ["model_index.json", "*/*.json", "*/*.txt", "*/*.fp16.safetensors"]
    assert _selected((allow, ignore)) == {
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/merges.txt",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/model.fp16.safetensors",
    }


def test_hub_patterns_without_variant() -> None:
    assert _selected(weights.hub_allow_patterns(None)) == {
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/merges.txt",
        "tokenizer/vocab.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    }
    assert weights.hub_patterns("detector") == (["*.json", "*.txt", "*.safetensors"], [])
    assert list(weights.VAE_ALLOW_PATTERNS) == ["config.json", "diffusion_pytorch_model.safetensors"]


def _uncached(calls: list[tuple[str, dict[str, object]]]):  # type: ignore[no-untyped-def]
    def fake_snapshot(repo_id: str, **kwargs: object) -> str:
        calls.append((repo_id, kwargs))
        if kwargs.get("local_files_only"):
            raise OSError("not cached")
        return f"/cache/{repo_id}"
    return fake_snapshot


def test_fetch_sdxl_downloads_repo_and_fix_vae(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    calls: list[tuple[str, dict[str, object]]] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _uncached(calls))
    path = weights.fetch(registry.get("sdxl"), tmp_path, show_progress=False)
    assert path == Path("/cache/diffusers/stable-diffusion-xl-1.0-inpainting-0.1")
    fetched = [(repo, kwargs) for repo, kwargs in calls if not kwargs.get("local_files_only")]
    assert [repo for repo, _ in fetched] == ["diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
                                             "madebyollin/sdxl-vae-fp16-fix"]
    assert fetched[0][1]["allow_patterns"] == weights.hub_allow_patterns("fp16")[0]
    assert fetched[1][1]["allow_patterns"] == ["config.json", "diffusion_pytorch_model.safetensors"]


def test_fetch_hub_error_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub

    def failing(repo_id: str, **kwargs: object) -> str:
        raise RuntimeError("connection refused\nPlease check your internet connection\nand try again")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    with pytest.raises(EditorError) as exc:
        weights.fetch(hub_entry("inpainter", "someone/some-inpainting-model"), tmp_path)
    message = _single_line(exc)
    assert "someone/some-inpainting-model" in message and "connection refused" in message


def test_offline_hub_fetch_names_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as exc:
        weights.fetch(registry.get("sd2"), tmp_path)
    assert "python -m editor download sd2" in _single_line(exc)


def _fake_cache(cache_dir: Path, repo_id: str, marker: str = "model_index.json") -> Path:
    """Lay out a repo the way huggingface_hub's cache stores it."""
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / marker).write_text("{}")
    return snapshot


def test_offline_uses_cached_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    main = _fake_cache(tmp_path, "diffusers/stable-diffusion-xl-1.0-inpainting-0.1")
    sdxl = registry.get("sdxl")
    assert weights.local_path(sdxl, tmp_path, cache_dir=tmp_path) is None  # the fix VAE is still missing
    with pytest.raises(EditorError):
        weights.fetch(sdxl, tmp_path, cache_dir=tmp_path)
    _fake_cache(tmp_path, "madebyollin/sdxl-vae-fp16-fix", marker="config.json")
    assert weights.fetch(sdxl, tmp_path, cache_dir=tmp_path) == main
    assert weights.companion_paths(sdxl, cache_dir=tmp_path)[0] is not None


def test_cached_hub_snapshot_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights.cached_hub_snapshot("nobody/nothing") is None
    assert weights.cached_hub_snapshot("nobody/nothing", cache_dir=tmp_path) is None


def test_cached_hub_snapshot_needs_a_config(tmp_path: Path) -> None:
    _fake_cache(tmp_path, "someone/empty", marker="README.md")
    assert weights.cached_hub_snapshot("someone/empty", cache_dir=tmp_path) is None
    snapshot = _fake_cache(tmp_path, "someone/model")
    assert weights.cached_hub_snapshot("someone/model", cache_dir=tmp_path) == snapshot

