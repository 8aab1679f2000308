"""`python -m editor bench --only session`: the figures of the session section, on a small count."""
from __future__ import annotations

from pathlib import Path

from benchmarks.bench import BenchSettings, run
from editor.core.config import ServerConfig


def test_the_session_section_measures_both_designs_and_checks_every_version(tmp_path: Path) -> None:
    settings = BenchSettings.for_run("cpu", ["session"], quick=True, sessions=2, session_edits=3,
                                     models_dir=str(tmp_path))
    report = run(settings, tmp_path / "out.json")
    photo_bytes = 6000 * 4000 * 3
    assert {m.name for m in report.measurements} == {
        "session_bytes_2x3_24mp", "session_bytes_2x3_24mp_naive", "session_commit_24mp_s",
        "session_read_back_24mp_s", "session_read_back_exact", "ui_overhead_24mp_s", "ui_overhead_24mp_s_naive",
        "download_png_24mp_s"}
    assert report.get("session_bytes_2x3_24mp_naive") * 2**30 == 2 * 4 * photo_bytes, "4 full copies per session"
    assert report.get("session_bytes_2x3_24mp") * 2**30 <= ServerConfig().session_memory_mb * 2**20
    assert report.get("session_read_back_exact") == 1.0
    assert report.get("session_commit_24mp_s") > 0
    assert 0 < report.get("ui_overhead_24mp_s") and 0 < report.get("ui_overhead_24mp_s_naive")
