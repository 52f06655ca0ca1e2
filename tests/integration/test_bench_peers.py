"""The peer bench's own machinery (bench/peers.py): argument checks, stopping process groups, Redis, report.

The bench itself is not run here (it takes minutes and needs the peers' venvs).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import peers  # noqa: E402
from peerlib import procs, report  # noqa: E402


@pytest.mark.parametrize("argv, needle", [
    (["--libs", "naq_nb,nope"], "--libs: unknown nope"),
    (["--jobs", "5"], "--jobs"),
    (["--runs", "0"], "--runs"),
])
def test_bad_arguments_are_named(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        peers.parse_args(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


def test_default_libraries_and_latency_rounds():
    a = peers.parse_args(["--jobs", "500"])
    assert a.libs[0] == "naq_nb" and "raw_nats" in a.libs and "naq_nb_sync" not in a.libs
    assert a.latency_rounds == 100
    assert peers.parse_args([]).latency_rounds == 200


def _wait_gone(pgid: int, bound: float = 30.0) -> list[int]:
    deadline = time.monotonic() + bound
    while (left := procs.live_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_stop_group_also_stops_a_child_that_ignores_sigterm(tmp_path):
    # The leader exits on SIGTERM but leaves a child that ignores it (like a pool process a CLI forgets).
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""
        import signal, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        open({str(ready)!r}, "w").write(str(child.pid))
        time.sleep(600)
    """)
    proc = procs.start_group([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the test's process group did not start"
    assert len(procs.live_members(proc.pid)) == 2
    procs.stop_group(proc, grace=5)
    assert proc.returncode is not None
    assert _wait_gone(proc.pid) == []


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="Debian's redis-server is not installed")
def test_redis_server_starts_answers_and_stops():
    r = procs.RedisServer().start()
    try:
        pgid, tmpdir = r.proc.pid, r.dir
        assert r.url.startswith("redis://127.0.0.1:")
        assert r.version()[0].isdigit()
        r.flushall()
    finally:
        r.stop()
    assert _wait_gone(pgid) == []
    assert not Path(tmpdir).exists()


def _summary() -> tuple[dict, dict, dict]:
    ok = {"e2e_per_s": 1000.0, "drain_per_s": 1500.0, "readback_s": 2.5, "p50_ms": 1.2, "p99_ms": 4.0,
          "version": "1.0", "notes": "worker -c 10"}
    runs = {"naq_nb": [dict(ok)], "huey": [dict(ok, e2e_per_s=800.0, drain_late=2, drain_all_s=31.0)],
            "rq": [{"error": "exited with 1"}], "saq": [dict(ok, e2e_per_s=700.0, latency_missed=1)],
            "raw_nats": [{"pub_sync_per_s": 5000.0, "pub_async_per_s": 50000.0, "pull_ack_per_s": 25000.0,
                          "pull_kv_per_s": 12000.0, "rt_p50_ms": 1.0, "rt_p99_ms": 2.0, "version": "2.16"}]}
    summary = {lib: peers.medians(rs) for lib, rs in runs.items()}
    meta = {"args": {"jobs": 500, "runs": 1, "latency_rounds": 100, "note": "test"}, "argv": ["--jobs", "500"],
            "started": time.time(), "duration_s": 60.0, "redis": "7.0", "load_start": (1.0, 1.0, 1.0),
            "load_end": (1.0, 1.0, 1.0)}
    return summary, runs, meta


def test_report_has_every_library_failures_and_the_ceiling(tmp_path):
    summary, runs, meta = _summary()
    assert summary["rq"]["runs_ok"] == 0 and summary["naq_nb"]["e2e_per_s"] == 1000.0
    report.write_markdown(tmp_path / "PEERS.md", summary, runs, meta)
    md = (tmp_path / "PEERS.md").read_text()
    assert "| **naq_nb** 1.0 | 1,000 | 1,500 | 2.50 s |" in md
    assert "rq (Redis)" in md and "failed: exited with 1" in md
    assert "| 5,000/s | 50,000/s | 25,000/s | 12,000/s |" in md
    assert "e2e: 1.25x the best peer (huey)" in md
    assert "huey (2 late, all done after 31.0 s)" in md
    assert "left out of p50/p99): saq (1)." in md
    report.write_chart(tmp_path / "peers.png", summary, meta)
    assert (tmp_path / "peers.png").read_bytes()[:4] == b"\x89PNG"


def test_medians_of_three_runs():
    m = peers.medians([{"e2e_per_s": 3.0}, {"e2e_per_s": 1.0}, {"e2e_per_s": 2.0}, {"error": "x"}])
    assert m["e2e_per_s"] == 2.0 and m["runs_ok"] == 3 and m["errors"] == ["x"]


def test_make_knows_the_target():
    out = subprocess.run(["make", "-n", "bench-peers", "PEERS_ARGS=--jobs 500 --runs 1"], cwd=BENCH.parent,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "bench/peers.py --jobs 500 --runs 1" in out.stdout


def test_report_only_rewrites_the_report_from_the_json(tmp_path):
    import json
    summary, runs, meta = _summary()
    (tmp_path / "peers.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}))
    assert peers.main(["--report-only", "--out", str(tmp_path)]) == 0
    assert "naq_nb" in (tmp_path / "PEERS.md").read_text()
    assert (tmp_path / "peers.png").exists()


def test_report_puts_the_async_job_row_beside_the_peers_too(tmp_path):
    summary, runs, meta = _summary()
    runs["naq_nb_async"] = [dict(runs["naq_nb"][0], e2e_per_s=1200.0, drain_per_s=2400.0)]
    summary["naq_nb_async"] = peers.medians(runs["naq_nb_async"])
    report.write_markdown(tmp_path / "PEERS.md", summary, runs, meta)
    md = (tmp_path / "PEERS.md").read_text()
    assert "| **naq_nb** (async job) 1.0 | 1,200 | 2,400 |" in md
    assert "**naq_nb** against the best peer of each column (above 1 = naq_nb ahead): e2e: 1.25x" in md
    assert "**naq_nb** (async job) against the best peer of each column (above 1 = naq_nb ahead): e2e: 1.50x" in md
    assert "**naq_nb** (async job)'s drain is 20% of the pull + KV put ceiling." in md
    assert "naq_nb_async" in peers.parse_args([]).libs
