"""`python -m editor loadtest`: a short real run against the app with tiny models, the loopback rule, the report."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from editor.core.errors import EditorError
from editor.loadtest.run import Plan, check_loopback, summary, write_json
from tests.tiny_models import write_tiny_setup

ROOT = Path(__file__).resolve().parent.parent
FIELDS = {"backend", "replicas", "users", "run_time_s", "requests", "failures", "p50_ms", "p95_ms", "rps"}


def test_a_short_load_test_on_the_local_backend_has_no_failures(tmp_path: Path) -> None:
    config = write_tiny_setup(tmp_path / "tiny")
    first = next((tmp_path / "tiny").glob("tiny-sd2*"))
    second = tmp_path / "tiny" / "another-inpainter"  # the same weights under another name: a second model
    second.symlink_to(first, target_is_directory=True)
    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, "-m", "editor", "loadtest", "--config", str(config), "--users", "2",
                           "--spawn-rate", "2", "--run-time", "6", "--json", str(out), "--csv", str(tmp_path / "run"),
                           "--set", f"inpaint.models=[{second}]", "--models", f"{second},{first}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert FIELDS <= report.keys()
    assert report["backend"] == "local" and report["users"] == 2 and report["run_time_s"] == 6
    assert report["requests"] > 0 and report["failures"] == 0
    assert 0 < report["p50_ms"] <= report["p95_ms"] and report["rps"] > 0
    assert report["endpoints"]["/segment"]["requests"] > 0  # every person clicks before editing
    assert "/fill another-inpainter" in report["endpoints"]  # the first person's first edit is a fill with it
    assert (tmp_path / "run_stats.csv").is_file()


@pytest.mark.parametrize("url", ["http://example.com:7860/", "http://10.0.0.5:7860", "ftp://127.0.0.1/"])
def test_only_loopback_urls_are_accepted(url: str) -> None:
    with pytest.raises(EditorError, match="loopback"):
        check_loopback(url)


def test_a_loopback_url_is_accepted_with_a_trailing_slash() -> None:
    assert check_loopback("http://127.0.0.1:7860") == "http://127.0.0.1:7860/"
    assert check_loopback("http://localhost:9/") == "http://localhost:9/"


def test_the_cli_refuses_a_remote_url_in_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "editor", "loadtest", "--url", "http://example.com/"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "loopback" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_report_comes_from_locusts_stats_csv(tmp_path: Path) -> None:
    stats = tmp_path / "run_stats.csv"
    header = "Type,Name,Request Count,Failure Count,50%,95%,Requests/s"
    stats.write_text(f"{header}\nAPI,/segment,30,1,40,90,3.0\nAPI,/fill,10,0,900,1500,1.0\n,Aggregated,40,1,50,1200,4.0\n")
    plan = Plan(users=3, spawn_rate=1, run_time_s=10, backend="local", config=None, overrides=[], url=None,
                photo=Path("x.png"))
    report = summary(stats, plan, {"segmenter": 1})
    write_json(report, tmp_path / "deep" / "out.json")
    again = json.loads((tmp_path / "deep" / "out.json").read_text())
    assert again == report
    assert (again["requests"], again["failures"], again["p50_ms"], again["p95_ms"]) == (40, 1, 50.0, 1200.0)
    assert again["endpoints"]["/fill"] == {"requests": 10, "failures": 0, "p50_ms": 900.0, "p95_ms": 1500.0, "rps": 1.0}
