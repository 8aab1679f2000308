"""The sessions of the whole app: one memory budget, each session's folder on disk (restored after
a restart, never half-written), expiry, and ids that never become foreign paths."""
from __future__ import annotations

import gc
import hashlib
import os
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from editor.core.config import load_config
from editor.core.errors import ConfigError, EditorError
from editor.session.session import Session
from editor.session.store import SessionStore

MB = 2**20


def digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


def small_edit(session: Session, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """A random patch painted on the working version, committed on it; the committed image."""
    image = session.image.copy()
    height, width = image.shape[:2]
    y, x = int(rng.integers(0, height - size)), int(rng.integers(0, width - size))
    image[y:y + size, x:x + size] = rng.integers(0, 256, (size, size, 3), np.uint8)
    session.commit(image, "edit", {"y": str(y)}, session.version.number)
    return image


def test_many_sessions_stay_under_one_budget_and_every_version_reads_back_exact(tmp_path: Path) -> None:
    """Six sessions of ten edits on a 600x400 photo would hold 47 MB as full copies."""
    budget, rng = 6 * MB, np.random.default_rng(3)
    digests: dict[tuple[str, int], str] = {}
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        store = SessionStore(tmp_path, budget, ttl_seconds=3600)
        for _ in range(6):
            session = store.create()
            session.open(rng.integers(0, 256, (400, 600, 3), np.uint8))
            digests[(session.id, 1)] = digest(session.image)
            for _ in range(10):
                committed = small_edit(session, rng)
                digests[(session.id, session.version.number)] = digest(committed)
                del committed
                assert store.bytes_in_memory() <= budget
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert held <= budget + MB, f"the process holds {held / MB:.1f} MB for a {budget / MB:.0f} MB budget"
    for (session_id, number), expected in digests.items():
        session = store.get(session_id)
        assert session is not None and digest(session.image_of(number)) == expected, (session_id, number)
        assert store.bytes_in_memory() <= budget


def test_a_version_saves_only_what_it_changed(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, 64 * MB, ttl_seconds=3600)
    session = store.create()
    session.open(np.zeros((1000, 1500, 3), np.uint8))
    image = session.image.copy()
    image[100:130, 200:220] = 255
    version = session.commit(image, "fill", {}, 1)
    folder = store.folder(session.id)
    assert (folder / "v1.npy").stat().st_size >= 1000 * 1500 * 3, "the original is saved whole"
    assert (folder / f"v{version.number}.npy").stat().st_size <= 30 * 20 * 3 + 256, "an edit saves its box only"


def test_a_new_store_restores_photo_history_working_version_and_selection(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, 64 * MB, ttl_seconds=3600)
    session, rng = store.create(), np.random.default_rng(5)
    session.open(rng.integers(0, 256, (120, 160, 3), np.uint8), "cat")
    images = {1: session.image.copy()}
    for _ in range(3):
        committed = small_edit(session, rng, 20)
        images[session.version.number] = committed
    session.goto(2)
    variations = [np.full((120, 160, 3), v, np.uint8) for v in (5, 6, 7)]
    session.add_result(variations, {"seed": "9"}, "fill: a hat", 2)
    images[5] = variations[0]
    session.goto(4)
    session.undo()  # working: 3; redo leads to 4
    session.grow_px, session.feather_px = 5, 3
    session.click(40, 40, "add")
    session.new_part(subtract=True)
    session.click(45, 45, "add")
    session.invert()
    brush = np.zeros((120, 160), bool)
    brush[100:110, 10:20] = True
    session.paint(brush, None)
    session.click(70, 20, "box")  # the first corner of a box, pending

    restored = SessionStore(tmp_path, 64 * MB, ttl_seconds=3600).get(session.id)
    assert restored is not None and restored is not session
    assert [(v.number, v.parent, v.label, v.metadata, v.size) for v in restored.versions] == [
        (v.number, v.parent, v.label, v.metadata, v.size) for v in session.versions]
    assert all(np.array_equal(a.thumbnail, b.thumbnail) for a, b in zip(restored.versions, session.versions))
    assert restored.version.number == 3 and restored.name == "cat"
    assert (restored.grow_px, restored.feather_px) == (5, 3)
    for number, image in images.items():
        assert np.array_equal(restored.image_of(number), image), number
    mine, theirs = session.selection, restored.selection
    assert theirs.parts == mine.parts and theirs.inverted and theirs.pending_corner == (70, 20)
    assert np.array_equal(theirs.brush_add > 0, brush) and theirs.brush_remove is None
    restored.redo()
    assert restored.version.number == 4, "redo goes where it went before the restart"
    restored.goto(5)
    restored.choose_variation(2)
    assert np.array_equal(restored.image, variations[2]), "the variations come back too"


def test_a_crash_while_saving_leaves_the_last_saved_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SessionStore(tmp_path, 64 * MB, ttl_seconds=3600)
    session = store.create()
    session.open(np.full((60, 80, 3), 50, np.uint8))
    first = session.image.copy()

    def half_then_crash(out, array, allow_pickle):  # type: ignore[no-untyped-def]
        out.write(b"\x93NUMPY half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", half_then_crash)
    changed = first.copy()
    changed[0:10, 0:10] = 1
    with pytest.raises(EditorError, match="cannot save the session's history: No space left on device"):
        session.commit(changed, "erase", {}, 1)
    monkeypatch.undo()
    folder = store.folder(session.id)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")], "no temporary file is left"
    (folder / ".index.json.0123.tmp").write_text("{half")  # as a power cut would leave it
    np.save(folder / "v2.npy", changed[0:10, 0:10])  # written, but the crash came before the index
    restored = SessionStore(tmp_path, 64 * MB, ttl_seconds=3600).get(session.id)
    assert restored is not None and [v.number for v in restored.versions] == [1]
    assert np.array_equal(restored.image, first)
    assert not (folder / ".index.json.0123.tmp").exists() and not (folder / "v2.npy").exists()
    assert restored.commit(changed, "erase", {}, 1).number == 2 and np.array_equal(restored.image, changed)


@pytest.mark.parametrize("damage", ["truncated index", "missing pixels", "foreign folder", "other format",
                                    "bad tree"])
def test_a_damaged_or_foreign_folder_is_refused_not_crashed_on(tmp_path: Path, damage: str) -> None:
    store = SessionStore(tmp_path, 64 * MB, ttl_seconds=3600)
    session = store.create()
    session.open(np.full((60, 80, 3), 50, np.uint8))
    small_edit(session, np.random.default_rng(1), 10)
    folder = store.folder(session.id)
    index = folder / "index.json"
    if damage == "truncated index":
        index.write_text(index.read_text()[:40])
    elif damage == "missing pixels":
        (folder / "v2.npy").unlink()
    elif damage == "foreign folder":
        for path in folder.iterdir():
            path.unlink()
        (folder / "index.json").write_text('{"hello": "world"}')
    elif damage == "other format":
        index.write_text(index.read_text().replace('"format":1', '"format":99'))
    else:
        index.write_text(index.read_text().replace('"parent":1', '"parent":7'))
    assert SessionStore(tmp_path, 64 * MB, ttl_seconds=3600).get(session.id) is None
    assert folder.is_dir(), "refused, not deleted: a person may still want to look at it"


def test_expiry_deletes_unused_sessions_memory_and_folder(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, 64 * MB, ttl_seconds=60)
    idle, busy = store.create(), store.create()
    for session in (idle, busy):
        session.open(np.full((60, 80, 3), 50, np.uint8))
    busy.begin_edit()
    assert store.expire() == 0, "nothing is old yet"
    assert store.expire(now=time.time() + 61) == 1
    assert not store.folder(idle.id).exists() and store.get(idle.id) is None
    assert store.get(busy.id) is busy, "a session whose edit runs is not expired"
    assert store.bytes_in_memory() > 0
    with pytest.raises(EditorError, match="expired"):
        idle.commit(np.zeros((60, 80, 3), np.uint8), "erase", {}, 1)
    busy.end_edit()
    assert store.expire(now=time.time() + 61) == 1 and store.bytes_in_memory() == 0


def test_creating_a_session_also_expires_the_old_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SessionStore(tmp_path, 64 * MB, ttl_seconds=60)
    old = store.create()
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    store.create()
    assert not store.folder(old.id).exists()


def test_a_new_store_deletes_what_expired_while_the_app_was_down(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, 64 * MB, ttl_seconds=3600)
    old, recent = store.create(), store.create()
    old.open(np.zeros((20, 20, 3), np.uint8))
    two_hours_ago = time.time() - 7200
    os.utime(store.folder(old.id) / "index.json", (two_hours_ago, two_hours_ago))
    foreign = tmp_path / "notes"
    foreign.mkdir()
    os.utime(foreign, (two_hours_ago, two_hours_ago))
    SessionStore(tmp_path, 64 * MB, ttl_seconds=3600)
    assert not store.folder(old.id).exists() and store.folder(recent.id).exists()
    assert foreign.is_dir(), "a folder that is not a session's is left alone"


@pytest.mark.parametrize("bad", ["../etc", "", "A" * 32, "g" * 32, "0" * 31, "0" * 32 + "/", "/tmp", None, 7])
def test_bad_session_ids_are_refused(tmp_path: Path, bad: object) -> None:
    store = SessionStore(tmp_path / "sessions", 64 * MB, ttl_seconds=3600)
    assert store.get(bad) is None  # type: ignore[arg-type]
    assert store.delete(bad) is False  # type: ignore[arg-type]
    with pytest.raises(EditorError, match="not a session id"):
        store.folder(bad)  # type: ignore[arg-type]
    assert store.get("0" * 32) is None, "a well-formed id nobody made"


def test_sessions_edit_at_once_from_several_threads_within_the_budget(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, 4 * MB, ttl_seconds=3600)  # thumbnails (3 MB) and a few photos: evictions cross threads
    failures: list[BaseException] = []
    results: dict[str, dict[int, str]] = {}

    def work(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            session = store.create()
            session.open(rng.integers(0, 256, (300, 400, 3), np.uint8))
            mine = results.setdefault(session.id, {1: digest(session.image)})
            for _ in range(12):
                committed = digest(small_edit(session, rng))
                mine[session.version.number] = committed
                if rng.random() < 0.3:
                    session.goto(int(rng.choice(list(mine))))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    for session_id, mine in results.items():
        session = store.get(session_id)
        assert session is not None
        assert {n: digest(session.image_of(n)) for n in mine} == mine
    assert store.bytes_in_memory() <= 4 * MB


def test_the_session_settings_are_validated() -> None:
    server = load_config(None).server
    assert (server.sessions_dir, server.session_memory_mb, server.session_ttl_minutes) == ("sessions", 768, 1440)
    for override, key in (("server.session_memory_mb=0", "server.session_memory_mb"),
                          ("server.session_ttl_minutes=-5", "server.session_ttl_minutes"),
                          ("server.sessions_dir=' '", "server.sessions_dir"),
                          ("server.session_memory_mb=1.5", "server.session_memory_mb")):
        with pytest.raises(ConfigError, match=f"'{key}'"):
            load_config(None, [override])
