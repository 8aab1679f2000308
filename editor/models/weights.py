"""Where model weights come from, whether they are present, and fetching them.

A registry entry (editor/models/registry.py) says where its weights come from: one file at a
URL, fetched with urllib into `models_dir` (resumable, checked against its published checksum),
or hub repositories fetched with huggingface_hub into its cache (which verifies each file).
This is the only module that talks to the network for weights.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from tqdm import tqdm

from editor.core.errors import EditorError, ModelUnavailableError
from editor.models.base import fetch_command

if TYPE_CHECKING:
    from editor.models.registry import ModelEntry

_TRUTHY = frozenset({"1", "true", "yes", "on"})
_HASH_CHUNK = 1 << 20
# "owner/name" as accepted by the Hub; anything else is not worth a network round-trip.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# A diffusers repo's fix VAE (SDXL's companion) also ships .pt/.bin copies; only the safetensors one is needed.
VAE_ALLOW_PATTERNS: tuple[str, ...] = ("config.json", "diffusion_pytorch_model.safetensors")
# A transformers repo (SAM 2.1, EdgeTAM, the detectors): configs, tokenizer files and safetensors weights.
TRANSFORMERS_ALLOW_PATTERNS: tuple[str, ...] = ("*.json", "*.txt", "*.safetensors")
CONNECT_TIMEOUT_S = 3.0  # an unreachable network is told within this, not after minutes of retries
HF_ENDPOINT = "https://huggingface.co"


# --------------------------------------------------------------------------- helpers


def offline() -> bool:
    """True when HF_HUB_OFFLINE is truthy: the kill switch for every download here."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY


def _one_line(text: object) -> str:
    """Collapse a (possibly multi-line) message so EditorError stays one line."""
    return " ".join(str(text).split())


def _first_line(exc: BaseException) -> str:
    """Exception type plus the first non-empty line: hub errors carry long hints."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file, streamed so multi-GB checkpoints don't load into memory."""
    return file_digest(path, "sha256")


def file_digest(path: Path | str, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> bool:
    """True if `path` exists and hashes to `expected` (case-insensitive hex)."""
    return Path(path).is_file() and file_sha256(path) == expected.strip().lower()


# --------------------------------------------------------------------------- single-file downloads


def _part_path(dest: Path) -> Path:
    return dest.with_suffix(dest.suffix + ".part")


def _open(url: str, start: int, timeout: float) -> http.client.HTTPResponse:
    """Open `url`, asking for bytes from `start` on when resuming."""
    request = urllib.request.Request(url)
    if start > 0:
        request.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (URLs come from our table)


def _content_range(headers: Message) -> tuple[int | None, int | None]:
    """(first byte, full size) from a Content-Range header like 'bytes 10-99/100' or 'bytes */100'."""
    match = re.match(r"bytes\s+(\d+|\*)(?:-\d+)?/(\d+|\*)", headers.get("Content-Range", ""))
    if not match:
        return None, None
    start, total = match.groups()
    return (None if start == "*" else int(start)), (None if total == "*" else int(total))


def _copy_body(
    response: http.client.HTTPResponse,
    out: BinaryIO,
    bar: tqdm,
    chunk_size: int,
) -> int:
    """Stream the response body into `out`; returns the number of bytes written."""
    written = 0
    # read1 hands over whatever has arrived, so a timeout mid-chunk loses nothing already received.
    while chunk := response.read1(chunk_size):
        out.write(chunk)
        written += len(chunk)
        bar.update(len(chunk))
    out.flush()
    os.fsync(out.fileno())
    return written


def _receive(
    url: str,
    part: Path,
    desc: str,
    *,
    timeout: float,
    chunk_size: int,
    show_progress: bool,
    bar_class: type[tqdm] = tqdm,
) -> None:
    """Fill `part` with the whole file, resuming it when possible.

    Raises the underlying network exception; the caller turns it into an EditorError.
    """
    start = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, start, timeout)
    except urllib.error.HTTPError as exc:
        exc.close()  # the error carries an open response; its code and headers stay readable
        if exc.code != 416 or start == 0:
            raise
        # 416: nothing left after `start`, i.e. the .part is already complete.
        _, total = _content_range(exc.headers)
        if total is not None and total != start:
            # The .part is longer than the file (e.g. the file changed upstream): start over.
            part.unlink()
            _receive(url, part, desc, timeout=timeout, chunk_size=chunk_size, show_progress=show_progress,
                     bar_class=bar_class)
        return
    with response:
        first, total = _content_range(response.headers)
        if response.status == 206 and first != start:
            if start == 0:
                raise ConnectionError(f"server sent an unrequested partial response starting at byte {first}")
            # Resumed at the wrong offset: appending would corrupt the file, so start over.
            response.close()
            part.unlink()
            _receive(url, part, desc, timeout=timeout, chunk_size=chunk_size, show_progress=show_progress,
                     bar_class=bar_class)
            return
        # A plain 200 means the server ignored Range: overwrite from byte zero.
        mode = "ab" if response.status == 206 else "wb"
        start = start if response.status == 206 else 0
        length = response.headers.get("Content-Length")
        if total is None and length is not None:
            total = start + int(length)
        with (
            open(part, mode) as out,
            bar_class(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                disable=not show_progress,
            ) as bar,
        ):
            received = start + _copy_body(response, out, bar, chunk_size)
    # http.client returns b"" rather than raising when the peer closes early.
    if total is not None and received < total:
        raise ConnectionError(f"connection closed after {received} of {total} bytes")


def _download_failure(url: str, exc: BaseException, part: Path) -> str:
    """One-line reason for a failed download, saying whether a resumable .part remains."""
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        reason = str(exc.reason)
    else:
        reason = str(exc) or type(exc).__name__
    if part.is_file() and part.stat().st_size > 0:
        reason += " (partial download kept; run again to resume)"
    return _one_line(f"download of {url} failed: {reason}")


def download_file(
    url: str,
    dest: Path,
    sha256: str | None,
    *,
    timeout: float = 20.0,
    chunk_size: int = 1 << 20,
    show_progress: bool = True,
    md5: str | None = None,
    bar_class: type[tqdm] = tqdm,
) -> Path:
    """Download `url` to `dest` via `dest.part`, resuming a previous attempt, verifying `sha256`
    (or `md5`, where only that is published).

    `dest` only ever appears complete and verified (atomic rename). On network failure
    the .part is kept so the next call resumes; on checksum mismatch it is deleted.
    `timeout` bounds the connection and each read.
    """
    dest = Path(dest)
    algorithm, expected = ("sha256", sha256) if sha256 is not None else ("md5", md5)
    if dest.is_file() and (expected is None or file_digest(dest, algorithm) == expected.strip().lower()):
        return dest
    if offline():
        raise ModelUnavailableError(f"HF_HUB_OFFLINE=1 is set: not downloading {url}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    try:
        _receive(url, part, dest.name, timeout=timeout, chunk_size=chunk_size, show_progress=show_progress,
                 bar_class=bar_class)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # OSError covers URLError/HTTPError, timeouts and resets; ValueError a malformed URL.
        raise EditorError(_download_failure(url, exc, part)) from exc
    if expected is not None:
        actual = file_digest(part, algorithm)
        if actual != expected.strip().lower():
            part.unlink()
            raise EditorError(f"checksum mismatch for {dest.name}: expected {expected}, got {actual}")
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------- registry entries


def hub_allow_patterns(variant: str | None = None) -> tuple[list[str], list[str]]:
    """(allow_patterns, ignore_patterns) for a diffusers repo.

    Only the diffusers layout in subfolders is needed: "*/" keeps out the root-level
    single-file .ckpt/.safetensors (several GB each). With a variant only that
    variant's weights are fetched; without one, every variant copy is ignored.
    """
    allow = ["model_index.json", "*/*.json", "*/*.txt"]
    if variant:
        return [*allow, f"*/*.{variant}.safetensors"], []
    ignore = [f"*.{name}.safetensors" for name in ("fp16", "bf16", "fp32", "ema", "non_ema")]
    return [*allow, "*/*.safetensors"], ignore


def hub_patterns(kind: str, variant: str | None = None) -> tuple[list[str], list[str]]:
    """What to fetch of a model's hub repo: a diffusers layout for an inpainter, transformers files otherwise."""
    if kind == "inpainter":
        return hub_allow_patterns(variant)
    return list(TRANSFORMERS_ALLOW_PATTERNS), []


def _repos(entry: ModelEntry) -> list[tuple[str, tuple[list[str], list[str]]]]:
    """(repo id, patterns) of each hub repo `entry` needs, its own first."""
    source = entry.source
    assert source is not None and source.hub is not None
    companions = [(repo, (list(VAE_ALLOW_PATTERNS), [])) for repo in source.companions]
    return [(source.hub, hub_patterns(entry.kind, source.variant)), *companions]


def local_path(entry: ModelEntry, models_dir: Path, *, cache_dir: Path | None = None) -> Path | None:
    """Where `entry`'s weights are on this machine (its file in `models_dir`, or its complete hub
    snapshot, companions included), or None. Never touches the network."""
    source = entry.source
    if source is None:
        return None
    if source.url is not None:
        path = Path(models_dir) / (source.filename or source.url.rsplit("/", 1)[-1])
        return path if path.is_file() else None
    paths = [cached_hub_snapshot(repo, cache_dir=cache_dir, patterns=patterns) for repo, patterns in _repos(entry)]
    return paths[0] if all(path is not None for path in paths) else None


def companion_paths(entry: ModelEntry, *, cache_dir: Path | None = None) -> tuple[Path | None, ...]:
    """The cached snapshots of `entry`'s companion repos (SDXL's fp16-safe VAE), in order."""
    return tuple(cached_hub_snapshot(repo, cache_dir=cache_dir, patterns=patterns)
                 for repo, patterns in _repos(entry)[1:])


def fetch(entry: ModelEntry, models_dir: Path, show_progress: bool = True, *, cache_dir: Path | None = None,
          downloads: Downloads | None = None) -> Path:
    """`entry`'s weights on this machine, downloaded (and verified) first when missing.

    A URL's file goes to `models_dir` and is checked against its published checksum; hub repos
    go to the Hugging Face cache. Offline, what is here is returned and nothing is fetched.
    """
    source = entry.source
    if source is None:
        raise EditorError(f"{entry.name} is built in: there is nothing to download")
    here = local_path(entry, models_dir, cache_dir=cache_dir)
    if here is not None:
        return here
    if offline():
        raise ModelUnavailableError(f"HF_HUB_OFFLINE=1 is set and {entry.name} is not on this machine: run "
                                    f"`{fetch_command(entry.name)}` with network access first")
    bar = _bar_class(downloads, entry.name, show_progress)
    try:
        if source.url is not None:
            dest = Path(models_dir) / (source.filename or source.url.rsplit("/", 1)[-1])
            return download_file(source.url, dest, source.sha256, md5=source.md5, show_progress=show_progress,
                                 bar_class=bar)
        paths = [_hub_download(repo, *patterns, bar, cache_dir) for repo, patterns in _repos(entry)]
        return Path(paths[0])
    finally:
        if downloads is not None:
            downloads.finish(entry.name)


def source_address(entry: ModelEntry | None) -> str:
    """The URL whose server a download of `entry` (None: a hub id) talks to first."""
    if entry is not None and entry.source is not None and entry.source.url is not None:
        return entry.source.url
    return os.environ.get("HF_ENDPOINT", HF_ENDPOINT)


def unreachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why `url`'s server cannot be reached (one line), or None when a connection opens within `timeout`.

    Checked before a download so that a machine without a network falls back in seconds
    instead of waiting out the libraries' retries.
    """
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except TimeoutError:
        return f"{parts.hostname} did not answer within {timeout:g} s"
    except OSError as exc:
        return f"{parts.hostname} is unreachable ({exc.strerror or type(exc).__name__})"


class Downloads:
    """The downloads in progress, by model name, for the page header ("downloading edgetam: 42%").

    One per running app, shared by the threads that fetch; a finished download leaves no trace.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress: dict[str, tuple[int, int | None]] = {}

    def update(self, name: str, done: int, total: int | None) -> None:
        with self._lock:
            self._progress[name] = (done, total)

    def finish(self, name: str) -> None:
        with self._lock:
            self._progress.pop(name, None)

    def lines(self) -> list[str]:
        with self._lock:
            progress = dict(self._progress)
        return [f"downloading {name}: {100 * done // total}%" if total else f"downloading {name}"
                for name, (done, total) in progress.items()]


def _bar_class(downloads: Downloads | None, name: str, show_progress: bool) -> type[tqdm]:
    """A tqdm class that draws in the terminal (when asked) and reports to `downloads`."""
    draw = show_progress

    class Bar(tqdm):
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["disable"] = not draw
            super().__init__(*args, **kwargs)
            self._done = int(kwargs.get("initial", 0) or 0)  # type: ignore[call-overload]
            self._report()

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            self._report()
            return super().update(n)

        def _report(self) -> None:
            if downloads is not None:
                downloads.update(name, self._done, int(self.total) if self.total else None)

    return Bar


# --------------------------------------------------------------------------- Hub cache


def cached_hub_snapshot(repo_id: str, *, cache_dir: Path | None = None,
                        patterns: tuple[list[str], list[str]] | None = None) -> Path | None:
    """The cached snapshot folder of `repo_id` if it is complete locally, else None.

    local_files_only=True keeps huggingface_hub off the network whatever HF_HUB_OFFLINE says.
    `patterns` (allow, ignore) default to those of a diffusers repo without a variant.
    """
    from huggingface_hub import snapshot_download

    allow, ignore = patterns or hub_allow_patterns(None)
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                local_files_only=True,
                allow_patterns=allow,
                ignore_patterns=ignore or None,
                cache_dir=cache_dir,
            )
        )
    except Exception:  # noqa: BLE001 - any failure simply means "not cached"
        return None
    if (folder / "model_index.json").is_file() or (folder / "config.json").is_file():
        return folder
    return None


def _hub_download(
    repo_id: str,
    allow: list[str],
    ignore: list[str],
    bar_class: type[tqdm],
    cache_dir: Path | None,
) -> str:
    """snapshot_download (which resumes by itself, and verifies each file) with its exceptions in one line."""
    from huggingface_hub import snapshot_download

    try:
        return str(
            snapshot_download(
                repo_id,
                allow_patterns=allow,
                ignore_patterns=ignore or None,
                cache_dir=cache_dir,
                tqdm_class=bar_class,
            )
        )
    except Exception as exc:  # noqa: BLE001 - hub raises many unrelated types; all are user-facing here
        reason = _first_line(exc)
        message = f"could not download {repo_id} from the Hugging Face Hub: {reason}"
        raise EditorError(_one_line(message)) from exc
