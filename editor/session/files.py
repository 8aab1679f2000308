"""One session's folder on disk: its index (JSON) and its arrays (.npy), written atomically.

Disk is the truth of a session and memory only a cache, so every write goes to a temporary name,
is flushed to disk, then renamed over the real one: a crash leaves the old file or the new one,
never half of one. `.npy` rather than PNG: a 24 MP PNG takes seconds to encode, np.save
milliseconds, and both are lossless. Reads check what they get, so a damaged or foreign folder is
refused with `DamagedSession`, never half-loaded.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from editor.core.errors import EditorError

INDEX = "index.json"
FORMAT = 1  # bump when the index changes shape; older folders are then refused, not misread
_NAME = re.compile(r"[a-z0-9_-]+\.npy")
_BLOB = re.compile(r"[a-z0-9_-]+\.bin")  # a photo's ICC profile, EXIF or XMP, as read from its file


class DamagedSession(EditorError):
    """A session folder that cannot be read back: missing, malformed, foreign or from another format."""


class SessionFolder:
    """The files of one session; after `delete`, writing raises (the session has expired)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.deleted = False

    def save_array(self, name: str, array: np.ndarray) -> None:
        self._atomic(_checked(name), lambda out: np.save(out, np.ascontiguousarray(array), allow_pickle=False))

    def load_array(self, name: str, ndim: int) -> np.ndarray:
        """A uint8 array of `ndim` dimensions saved by `save_array`, read-only."""
        path = self.path / _checked(name)
        self._check_alive()
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DamagedSession(f"the saved history of this session is missing or damaged ({name}: {exc})") from None
        if array.dtype != np.uint8 or array.ndim != ndim:
            raise DamagedSession(f"the saved history of this session is damaged ({name} is not an image)")
        array.flags.writeable = False
        return array

    def save_bytes(self, name: str, data: bytes) -> None:
        self._atomic(_checked(name, _BLOB), lambda out: out.write(data))

    def load_bytes(self, name: str) -> bytes:
        self._check_alive()
        try:
            return (self.path / _checked(name, _BLOB)).read_bytes()
        except OSError as exc:
            raise DamagedSession(f"the saved photo details of this session are missing ({name}: {exc})") from None

    def save_index(self, data: dict[str, Any]) -> None:
        text = json.dumps({"format": FORMAT, **data}, separators=(",", ":"))
        self._atomic(INDEX, lambda out: out.write(text.encode("utf-8")))

    def load_index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DamagedSession(f"no readable session index in {self.path.name} ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DamagedSession(f"{self.path.name} is not a session folder of this version of the editor")
        return data

    def remove(self, *names: str) -> None:
        for name in names:
            (self.path / _checked(name, _BLOB if name.endswith(".bin") else _NAME)).unlink(missing_ok=True)

    def arrays(self) -> set[str]:
        """The names of the arrays in the folder (to find the ones no index refers to any more)."""
        try:
            return {p.name for p in self.path.iterdir() if _NAME.fullmatch(p.name)}
        except OSError:
            return set()

    def remove_temporaries(self) -> None:
        """Temporary files a crash left behind; the real files they were meant to replace are intact."""
        for path in self.path.glob(".*.tmp"):
            path.unlink(missing_ok=True)

    def touch(self) -> None:
        try:
            os.utime(self.path / INDEX)
        except OSError:
            pass

    def last_used(self) -> float | None:
        """When the index was last written or touched (None without one: a folder being created)."""
        try:
            return (self.path / INDEX).stat().st_mtime
        except OSError:
            return None

    def delete(self) -> None:
        self.deleted = True
        shutil.rmtree(self.path, ignore_errors=True)

    def _check_alive(self) -> None:
        if self.deleted:
            raise EditorError("this session has expired: open the photo again")

    def _atomic(self, name: str, write: Callable[[IO[bytes]], Any]) -> None:
        self._check_alive()
        temporary = self.path / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path / name)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise EditorError(f"cannot save the session's history: {exc.strerror or exc}") from None


def _checked(name: str, pattern: re.Pattern[str] = _NAME) -> str:
    """Array names are the session's own (v12.npy, t12.npy), like its other files (icc1.bin): never a path."""
    if not pattern.fullmatch(name):
        raise ValueError(f"not an array name: {name!r}")
    return name
