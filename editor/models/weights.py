"""Where model weights come from, whether they are present, and fetching them.

SAM checkpoints are single files fetched with urllib (resumable, checksummed);
inpainting models are diffusers folders fetched with huggingface_hub.
This is the only module that talks to the network for weights.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from editor.core.errors import EditorError, ModelUnavailableError
from editor.models.base import fetch_command

DOWNLOAD_INPAINT_COMMAND = fetch_command("inpaint")
DOWNLOAD_DETECTOR_COMMAND = fetch_command("detector")
_TRUTHY = frozenset({"1", "true", "yes", "on"})
_HASH_CHUNK = 1 << 20
# "owner/name" as accepted by the Hub; anything else is not worth a network round-trip.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class SamCheckpoint:
    model_type: str
    filename: str
    url: str
    sha256: str


_SAM_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"

SAM_CHECKPOINTS: dict[str, SamCheckpoint] = {
    "vit_h": SamCheckpoint(
        "vit_h",
        "sam_vit_h_4b8939.pth",
        _SAM_BASE_URL + "sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
    "vit_l": SamCheckpoint(
        "vit_l",
        "sam_vit_l_0b3195.pth",
        _SAM_BASE_URL + "sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "vit_b": SamCheckpoint(
        "vit_b",
        "sam_vit_b_01ec64.pth",
        _SAM_BASE_URL + "sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
}


@dataclass(frozen=True)
class InpaintPreset:
    name: str
    repo_id: str
    native_size: int
    variant: str | None
    vae_repo_id: str | None


INPAINT_PRESETS: dict[str, InpaintPreset] = {
    # The stock SDXL VAE overflows in fp16; the "fp16-fix" VAE is a drop-in replacement.
    "sdxl": InpaintPreset(
        "sdxl",
        "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
        1024,
        "fp16",
        "madebyollin/sdxl-vae-fp16-fix",
    ),
    # Community mirror: the original stabilityai repo was taken down.
    "sd2": InpaintPreset("sd2", "sd2-community/stable-diffusion-2-inpainting", 512, None, None),
}

# The fix VAE repo also ships .pt/.bin copies; only the safetensors one is needed.
VAE_ALLOW_PATTERNS: tuple[str, ...] = ("config.json", "diffusion_pytorch_model.safetensors")
# A transformers detector repo: configs, tokenizer files and safetensors weights (not the .bin copies).
DETECTOR_ALLOW_PATTERNS: tuple[str, ...] = ("*.json", "*.txt", "*.safetensors")


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
    digest = hashlib.sha256()
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
            _receive(url, part, desc, timeout=timeout, chunk_size=chunk_size, show_progress=show_progress)
        return
    with response:
        first, total = _content_range(response.headers)
        if response.status == 206 and first != start:
            if start == 0:
                raise ConnectionError(f"server sent an unrequested partial response starting at byte {first}")
            # Resumed at the wrong offset: appending would corrupt the file, so start over.
            response.close()
            part.unlink()
            _receive(url, part, desc, timeout=timeout, chunk_size=chunk_size, show_progress=show_progress)
            return
        # A plain 200 means the server ignored Range: overwrite from byte zero.
        mode = "ab" if response.status == 206 else "wb"
        start = start if response.status == 206 else 0
        length = response.headers.get("Content-Length")
        if total is None and length is not None:
            total = start + int(length)
        with (
            open(part, mode) as out,
            tqdm(
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
) -> Path:
    """Download `url` to `dest` via `dest.part`, resuming a previous attempt, verifying `sha256`.

    `dest` only ever appears complete and verified (atomic rename). On network failure
    the .part is kept so the next call resumes; on checksum mismatch it is deleted.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or verify_sha256(dest, sha256)):
        return dest
    if offline():
        raise ModelUnavailableError(f"HF_HUB_OFFLINE=1 is set: not downloading {url}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    try:
        _receive(url, part, dest.name, timeout=timeout, chunk_size=chunk_size, show_progress=show_progress)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # OSError covers URLError/HTTPError, timeouts and resets; ValueError a malformed URL.
        raise EditorError(_download_failure(url, exc, part)) from exc
    if sha256 is not None:
        actual = file_sha256(part)
        if actual != sha256.strip().lower():
            part.unlink()
            raise EditorError(f"checksum mismatch for {dest.name}: expected {sha256}, got {actual}")
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------- SAM


def _sam_checkpoint(model_type: str) -> SamCheckpoint:
    try:
        return SAM_CHECKPOINTS[model_type]
    except KeyError:
        valid = ", ".join(SAM_CHECKPOINTS)
        raise EditorError(f"unknown SAM model type {model_type!r}; choose one of: {valid}") from None


def sam_checkpoint_path(model_type: str, models_dir: Path) -> Path:
    """Where the checkpoint for `model_type` lives (whether or not it is there yet)."""
    return Path(models_dir) / _sam_checkpoint(model_type).filename


def fetch_sam(model_type: str, models_dir: Path, show_progress: bool = True) -> Path:
    """Make sure the SAM checkpoint is in `models_dir` (downloading it if needed); return its path."""
    checkpoint = _sam_checkpoint(model_type)
    dest = sam_checkpoint_path(model_type, models_dir)
    return download_file(checkpoint.url, dest, checkpoint.sha256, show_progress=show_progress)


# --------------------------------------------------------------------------- inpainting (Hub)


def hub_allow_patterns(preset: InpaintPreset | None) -> tuple[list[str], list[str]]:
    """(allow_patterns, ignore_patterns) for a diffusers repo.

    Only the diffusers layout in subfolders is needed: "*/" keeps out the root-level
    single-file .ckpt/.safetensors (several GB each). With a variant only that
    variant's weights are fetched; without one, every variant copy is ignored.
    `None` means a Hub id that is not a preset: treated as variant-less.
    For the fix VAE repo use VAE_ALLOW_PATTERNS.
    """
    allow = ["model_index.json", "*/*.json", "*/*.txt"]
    if preset is not None and preset.variant:
        return [*allow, f"*/*.{preset.variant}.safetensors"], []
    ignore = [f"*.{variant}.safetensors" for variant in ("fp16", "bf16", "fp32", "ema", "non_ema")]
    return [*allow, "*/*.safetensors"], ignore


def _patterns_for_repo(repo_id: str) -> tuple[list[str], list[str]]:
    """Patterns matching how `repo_id` would have been fetched, so cache checks agree."""
    for preset in INPAINT_PRESETS.values():
        if preset.repo_id == repo_id:
            return hub_allow_patterns(preset)
        if preset.vae_repo_id == repo_id:
            return list(VAE_ALLOW_PATTERNS), []
    return hub_allow_patterns(None)


class _SilentTqdm(tqdm):
    """tqdm that never draws: huggingface_hub routes all its bars through tqdm_class."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def cached_hub_snapshot(repo_id: str, *, cache_dir: Path | None = None,
                        patterns: tuple[list[str], list[str]] | None = None) -> Path | None:
    """The cached snapshot folder of `repo_id` if it is complete locally, else None.

    local_files_only=True keeps huggingface_hub off the network whatever HF_HUB_OFFLINE says.
    `patterns` (allow, ignore) default to those of the inpainting repos.
    """
    from huggingface_hub import snapshot_download

    allow, ignore = patterns or _patterns_for_repo(repo_id)
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
    show_progress: bool,
    cache_dir: Path | None,
) -> str:
    """snapshot_download (which resumes by itself) with its exceptions turned into one line."""
    from huggingface_hub import snapshot_download

    try:
        return str(
            snapshot_download(
                repo_id,
                allow_patterns=allow,
                ignore_patterns=ignore or None,
                cache_dir=cache_dir,
                tqdm_class=None if show_progress else _SilentTqdm,
            )
        )
    except Exception as exc:  # noqa: BLE001 - hub raises many unrelated types; all are user-facing here
        reason = _first_line(exc)
        message = f"could not download {repo_id} from the Hugging Face Hub: {reason}"
        raise EditorError(_one_line(message)) from exc


def _hub_repos(model: str) -> list[tuple[str, list[str], list[str]]]:
    """(repo_id, allow, ignore) for each repo `model` needs, main repo first."""
    preset = INPAINT_PRESETS.get(model)
    if preset is None:
        if not _REPO_ID.match(model):
            names = ", ".join(INPAINT_PRESETS)
            raise EditorError(
                f"{model!r} is not a preset ({names}), a Hugging Face repo id, or an existing folder"
            )
        return [(model, *hub_allow_patterns(None))]
    repos = [(preset.repo_id, *hub_allow_patterns(preset))]
    if preset.vae_repo_id:
        repos.append((preset.vae_repo_id, list(VAE_ALLOW_PATTERNS), []))
    return repos


def fetch_inpaint_model(model: str, show_progress: bool = True, *, cache_dir: Path | None = None) -> str:
    """Local path of the inpainting model `model` (preset name, Hub id, or local folder).

    A local folder is returned unchanged. Hub repos (plus a preset's fix VAE) are
    fetched into the HF cache; when offline, an already cached copy is used.
    """
    local = Path(model).expanduser()
    if local.is_dir():
        # Unchanged unless "~" needed expanding: diffusers does not expand it.
        return str(local) if model.startswith("~") else model
    repos = _hub_repos(model)
    if offline():  # check every repo first: nothing is fetched offline
        for repo_id, allow, ignore in repos:
            _cached_or_explain(repo_id, (allow, ignore), DOWNLOAD_INPAINT_COMMAND, cache_dir)
    paths = [_fetch_repo(repo, (allow, ignore), DOWNLOAD_INPAINT_COMMAND, show_progress, cache_dir)
             for repo, allow, ignore in repos]
    return paths[0]


# --------------------------------------------------------------------------- detector (Hub)


def detector_patterns() -> tuple[list[str], list[str]]:
    return list(DETECTOR_ALLOW_PATTERNS), []


def fetch_detector(model: str, show_progress: bool = True, *, cache_dir: Path | None = None) -> str:
    """Local path of the open-vocabulary detector `model` (Hub id or local folder), fetched if needed."""
    local = Path(model).expanduser()
    if local.is_dir():
        return str(local)
    if not _REPO_ID.match(model):
        raise EditorError(f"detector model {model!r} is neither a Hugging Face repo id nor an existing folder")
    return _fetch_repo(model, detector_patterns(), DOWNLOAD_DETECTOR_COMMAND, show_progress, cache_dir)


# --------------------------------------------------------------------------- shared


def _fetch_repo(repo_id: str, patterns: tuple[list[str], list[str]], command: str, show_progress: bool,
                cache_dir: Path | None) -> str:
    """The repo's snapshot folder: the cached copy when offline, else a (resumable) download."""
    if offline():
        return _cached_or_explain(repo_id, patterns, command, cache_dir)
    return _hub_download(repo_id, *patterns, show_progress, cache_dir)


def _cached_or_explain(repo_id: str, patterns: tuple[list[str], list[str]], command: str,
                       cache_dir: Path | None) -> str:
    cached = cached_hub_snapshot(repo_id, cache_dir=cache_dir, patterns=patterns)
    if cached is None:
        raise ModelUnavailableError(
            f"HF_HUB_OFFLINE=1 is set and {repo_id} is not cached: run `{command}` with network access first"
        )
    return str(cached)
