"""Every person's session, for the whole app: made, found (in memory or restored from its folder
after a restart), expired, and held to one byte budget for the pixels in memory.

Each session lives in `root/<id>/` (see editor/session_files.py); the folder is the truth and the
pixels in memory a shared cache (editor/pixel_cache.py). Ids are 32 lowercase hex digits
(uuid4), checked before they become paths.
"""
from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from pathlib import Path

from editor.core.errors import EditorError
from editor.session.pixel_cache import PixelCache
from editor.session.session import Session
from editor.session.files import SessionFolder

_ID = re.compile(r"[0-9a-f]{32}")
EXPIRY_EVERY_S = 60.0  # `create` also expires old sessions, at most this often
log = logging.getLogger(__name__)


def valid_id(session_id: object) -> bool:
    return isinstance(session_id, str) and _ID.fullmatch(session_id) is not None


class SessionStore:
    """One per app, shared by all sessions; thread-safe."""

    def __init__(self, root: Path, memory_budget_bytes: int, ttl_seconds: float, feather_px: int = 8) -> None:
        if memory_budget_bytes <= 0 or ttl_seconds <= 0:
            raise EditorError("the session memory budget and time to live must be greater than 0")
        self.root = Path(root)
        self.ttl_seconds = ttl_seconds
        self.feather_px = feather_px
        self._cache = PixelCache(memory_budget_bytes)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.RLock()
        self._expired_at = 0.0
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EditorError(f"cannot create the sessions folder {self.root}: {exc.strerror or exc}") from None
        self.expire()  # what a previous run left past its time

    def create(self) -> Session:
        """A new, empty session with a fresh random id, saved at once (old ones expire meanwhile)."""
        with self._lock:
            if time.time() - self._expired_at >= EXPIRY_EVERY_S:
                self.expire()
            session_id = uuid.uuid4().hex
            session = Session.new(session_id, SessionFolder(self.folder(session_id)), self._cache, self.feather_px)
            self._sessions[session_id] = session
            return session

    def get(self, session_id: str) -> Session | None:
        """The live session, or the one restored from its folder (after a restart); None when the
        id is malformed, unknown, expired, or its folder cannot be read back."""
        if not valid_id(session_id):
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = self._restore(session_id)
            if session is not None:
                session.touch()
            return session

    def delete(self, session_id: str) -> bool:
        """Forget a session now, memory and folder; False when there was none."""
        if not valid_id(session_id):
            return False
        with self._lock:
            session = self._sessions.pop(session_id, None)
            path = self.folder(session_id)
            existed = session is not None or path.is_dir()
            if session is not None:
                session.delete_files()
            else:
                SessionFolder(path).delete()
            self._cache.drop_session(session_id)
            return existed

    def expire(self, now: float | None = None) -> int:
        """Delete the sessions unused for the time to live, memory and folder (not one whose edit is
        running); the number deleted."""
        now = time.time() if now is None else now
        deleted = 0
        with self._lock:
            self._expired_at = time.time()
            for session_id, session in list(self._sessions.items()):
                if now - session.last_used >= self.ttl_seconds and not session.edit_running:
                    deleted += self.delete(session_id)
            for path in self._folders():
                if path.name not in self._sessions and self._expired_on_disk(path, now):
                    deleted += self.delete(path.name)
        return deleted

    def bytes_in_memory(self) -> int:
        """Pixel bytes held in memory by all sessions: cached images, deltas and masks, plus
        thumbnails and brush strokes (what the budget bounds)."""
        return self._cache.bytes_in_memory()

    @property
    def memory_budget_bytes(self) -> int:
        return self._cache.budget_bytes

    def folder(self, session_id: str) -> Path:
        if not valid_id(session_id):
            raise EditorError(f"not a session id: {session_id!r}")
        return self.root / session_id

    def _restore(self, session_id: str) -> Session | None:
        folder = SessionFolder(self.folder(session_id))
        if not folder.path.is_dir():
            return None
        if self._expired_on_disk(folder.path, time.time()):
            self.delete(session_id)
            return None
        try:
            session = Session.restore(session_id, folder, self._cache)
        except EditorError as exc:  # damaged, foreign, or of another format: refused, left as it is
            log.warning("session %s not restored: %s", session_id, exc)
            return None
        self._sessions[session_id] = session
        return session

    def _folders(self) -> list[Path]:
        try:
            return [path for path in self.root.iterdir() if valid_id(path.name) and path.is_dir()]
        except OSError:
            return []

    def _expired_on_disk(self, path: Path, now: float) -> bool:
        """Its index (or, without one, the folder) unchanged for the time to live."""
        used = SessionFolder(path).last_used()
        if used is None:
            try:
                used = path.stat().st_mtime
            except OSError:
                return False
        return now - used >= self.ttl_seconds
