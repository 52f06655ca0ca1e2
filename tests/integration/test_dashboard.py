"""``nq.dashboard()`` against a real nats-server, and ``naq dashboard`` (Voilà) from the command line."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import naq_nb as nq
from naq_nb.client.scheduling import cancel_scheduled_job_sync, list_scheduled_sync, schedule_sync
from naq_nb.notebook.dashboard import Dashboard, dashboard, dashboard_async

import jobs
from helpers import ROOT, wait_until


def _rows(dash: Dashboard, section: str) -> list[dict]:
    return dash.state().get(section, [])


def _failed_job(client, tmp_path) -> str:
    """A job that fails once (no retries) and succeeds when run again: it lands in the failed stream."""
    fut = nq.options(max_retries=0, client=client).submit(jobs.fail_until, str(tmp_path / "count"), 2)
    with pytest.raises(ConnectionError):
        fut.result(timeout=15)
    return fut.job_id


# --- bad input: a clear error at the call, nothing opened ------------------------------------------
@pytest.mark.parametrize("kwargs, exc, words", [
    ({"refresh": 0}, ValueError, "refresh"),
    ({"refresh": "fast"}, ValueError, "refresh"),
    ({"refresh": float("nan")}, ValueError, "refresh"),
    ({"updates_per_second": 0}, ValueError, "updates_per_second"),
    ({"updates_per_second": 100}, ValueError, "updates_per_second"),
    ({"max_rows": 0}, ValueError, "max_rows"),
    ({"rate_window": -1}, ValueError, "rate_window"),
    ({"client": "nats://127.0.0.1:4222"}, TypeError, "Client"),
    ({"colour": "red"}, TypeError, "colour"),
])
def test_bad_arguments_raise_before_connecting(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        dashboard(**kwargs)


async def test_bad_arguments_async_form():
    with pytest.raises(ValueError, match="refresh"):
        await dashboard_async(refresh=-1)


# --- the live view -----------------------------------------------------------------------------------
def test_dashboard_shows_worker_schedule_and_failed_job(nb_client, thread_worker, tmp_path):
    worker = thread_worker("default", concurrency=2)
    sched = schedule_sync(jobs.add, 1, 2, interval=3600, client=nb_client)
    failed_id = _failed_job(nb_client, tmp_path)
    dash = dashboard(nb_client, refresh=0.5)
    try:
        # the first view is loaded before dashboard() returns
        assert [w["worker_id"] for w in _rows(dash, "workers")] == [worker.worker_id]
        assert [s["schedule_id"] for s in _rows(dash, "schedules")] == [sched.job_id]
        assert [f["job_id"] for f in _rows(dash, "failed")] == [failed_id]
        s = _rows(dash, "schedules")[0]
        assert s["function"] == "jobs.add" and s["every"] == "every 3600s" and s["paused"] == "no"
        f = _rows(dash, "failed")[0]
        assert f["function"] == "jobs.fail_until" and "attempt 1 fails" in f["error"] and f["attempts"] == 1
        w = _rows(dash, "workers")[0]
        assert w["state"] in ("idle", "busy") and w["host"] == socket.gethostname()
        assert [q["queue"] for q in _rows(dash, "queues")] == ["default"]

        html, text = dash.to_html(), dash.to_text()
        assert worker.worker_id in html and failed_id in html and sched.job_id in html
        assert worker.worker_id in text and "Failed jobs:" in text
        bundle = dash._repr_mimebundle_()
        assert bundle["text/plain"] == text and worker.worker_id in bundle["text/html"]
        assert "model_id" in bundle["application/vnd.jupyter.widget-view+json"]
        assert set(dash.requeue_buttons) == {failed_id} and set(dash.schedule_buttons) == {sched.job_id}
    finally:
        dash.close()


def test_requeue_button_runs_the_failed_job_again(nb_client, thread_worker, tmp_path):
    thread_worker("default")
    failed_id = _failed_job(nb_client, tmp_path)
    dash = dashboard(nb_client, refresh=0.5)
    try:
        button = dash.requeue_buttons[failed_id]
        assert button.description == "Requeue" and not button.disabled
        button.click()
        assert nb_client.failed_sync() == []  # out of the failed stream at once
        # back on the queue: the worker runs it a second time, and that run succeeds
        wait_until(lambda: nb_client.status_sync(failed_id)["status"] == "succeeded", timeout=15)
        assert (tmp_path / "count").read_text().count("\n") == 2
        wait_until(lambda: not _rows(dash, "failed") and failed_id not in dash.requeue_buttons)
        assert "requeued" in dash.state()["message"]
        # the finish was pushed to the dashboard through the status subscription
        wait_until(lambda: float(_rows(dash, "queues")[0]["finished_per_s"]) > 0)
    finally:
        dash.close()


def test_requeued_job_result_is_stored(nb_client, thread_worker, tmp_path):
    thread_worker("default")
    failed_id = _failed_job(nb_client, tmp_path)
    dash = dashboard(nb_client, refresh=0.5)
    try:
        dash.requeue_buttons[failed_id].click()
        wait_until(lambda: nb_client.status_sync(failed_id)["status"] == "succeeded", timeout=15)
        assert nb_client.result_sync(failed_id, timeout=3) == 2
    finally:
        dash.close()


def test_pause_and_resume_buttons_toggle_the_schedule(nb_client):
    sched = schedule_sync(jobs.add, 1, 2, interval=3600, client=nb_client)
    dash = dashboard(nb_client, refresh=0.5)
    try:
        button = dash.schedule_buttons[sched.job_id]
        assert button.description == "Pause"
        button.click()
        assert list_scheduled_sync(client=nb_client)[0]["paused"] is True
        wait_until(lambda: button.description == "Resume" and _rows(dash, "schedules")[0]["paused"] == "yes")
        button.click()
        assert list_scheduled_sync(client=nb_client)[0]["paused"] is False
        wait_until(lambda: button.description == "Pause" and _rows(dash, "schedules")[0]["paused"] == "no")
    finally:
        dash.close()


def test_a_schedule_whose_fires_keep_failing_says_so_in_its_row(nb_client):
    """The scheduler backs off a schedule whose fires fail and records why; its row showed nothing."""
    from naq_nb.client.loop import run_sync
    from naq_nb.core.fire_backoff import record_failure
    from naq_nb.core.schedules import load_schedule

    sched = schedule_sync(jobs.add, 1, 2, interval=3600, client=nb_client)
    dash = dashboard(nb_client, refresh=0.5)
    try:
        assert _rows(dash, "schedules")[0]["failing"] == ""

        async def fail_twice() -> None:
            b = await nb_client.broker()
            for _ in range(2):
                s, body = await load_schedule(b, sched.job_id)
                assert await record_failure(b, s, body, "no response from stream NAQ_JOBS") is not None

        run_sync(fail_twice())
        wait_until(lambda: _rows(dash, "schedules")[0]["failing"] == "2x: no response from stream NAQ_JOBS")
        assert "2x: no response from stream" in dash.to_text()
    finally:
        dash.close()


def test_pushed_changes_and_close(nb_client, thread_worker, tmp_path):
    dash = dashboard(nb_client, refresh=30)  # a long refresh: what appears below was pushed
    try:
        assert _rows(dash, "workers") == [] and _rows(dash, "failed") == []
        worker = thread_worker("default")
        wait_until(lambda: [w["worker_id"] for w in _rows(dash, "workers")] == [worker.worker_id])
        failed_id = _failed_job(nb_client, tmp_path)
        wait_until(lambda: [f["job_id"] for f in _rows(dash, "failed")] == [failed_id])
        sched = schedule_sync(jobs.add, 1, 2, cron="0 7 * * *", client=nb_client)
        wait_until(lambda: [s["every"] for s in _rows(dash, "schedules")] == ["cron 0 7 * * *"])
        cancel_scheduled_job_sync(sched, client=nb_client)
        wait_until(lambda: _rows(dash, "schedules") == [])
    finally:
        dash.close()
    assert dash.closed and "(closed," in dash.to_text()
    assert all(b.disabled for b in dash.requeue_buttons.values())
    dash.close()  # idempotent


async def test_async_forms(nb_client):
    dash = await dashboard_async(nb_client, refresh=0.5)
    await dash.refresh_now_async()
    assert dash.state()["queues"] == [] and not dash.closed
    await dash.close_async()
    assert dash.closed


# --- naq dashboard ----------------------------------------------------------------------------------
def _naq(*args, env=None, timeout=60):
    e = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", **(env or {})}
    return subprocess.run([sys.executable, "-m", "naq_nb.cli.main", *args], env=e, capture_output=True,
                          text=True, timeout=timeout)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_help():
    out = _naq("dashboard", "--help")
    assert out.returncode == 0
    for flag in ("--port", "--nats-url", "--host", "--no-browser"):
        assert flag in out.stdout


def test_cli_bad_port_is_rejected():
    out = _naq("dashboard", "--port", "70000")
    assert out.returncode == 2 and "port must be 1-65535" in out.stderr


def test_cli_without_voila_names_the_extra(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "voila.py").write_text("raise ImportError('No module named voila (hidden by the test)')\n")
    env = {"PYTHONPATH": f"{shim}:{ROOT}"}
    out = _naq("dashboard", "--no-browser", "--nats-url", f"nats://127.0.0.1:{_closed_port()}", env=env)
    assert out.returncode == 1
    assert "pip install 'naq_nb[dashboard]'" in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr


def test_cli_unreachable_server_is_one_line():
    pytest.importorskip("voila")
    out = _naq("dashboard", "--no-browser", "--nats-url", f"nats://127.0.0.1:{_closed_port()}",
               env={"NAQ_CONNECT_TIMEOUT": "2"})
    assert out.returncode == 1 and "cannot connect to NATS" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_cli_serves_the_page_and_stops_on_sigterm(nats_server, nb_client, thread_worker):
    pytest.importorskip("voila")
    worker = thread_worker("default")
    port = _closed_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    proc = subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "dashboard", "--no-browser",
                             "--port", str(port), "--nats-url", nats_server.url],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # printed once Voilà answers
        assert f"http://127.0.0.1:{port}/" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        # Voilà executes the notebook before it sends the page: the dashboard's HTML fallback is in it
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=90) as r:
            page = r.read().decode()
        assert r.status == 200 and worker.worker_id in page and "application/vnd.jupyter.widget-view+json" in page
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # Voilà's port is released once it is gone
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("Voilà still listens after naq dashboard stopped")


# --- round 2: charts, recent jobs, load, details, depth, final state ---------------------------------
def test_depth_counts_waiting_jobs_not_running_ones(nb_client, thread_worker, tmp_path):
    """Row 9: a running job is not in the queue's depth; the queue shows it as running."""
    thread_worker("default", concurrency=1)
    gate = tmp_path / "gate"
    running = nq.submit(jobs.mark, str(gate), "x", 3.0)  # holds the only slot for a while
    waiting = [nq.submit(jobs.add, i, i) for i in range(3)]
    wait_until(lambda: running.status == "running", timeout=15)
    dash = dashboard(nb_client, refresh=0.3)
    try:
        wait_until(lambda: _rows(dash, "queues") and _rows(dash, "queues")[0]["running"] == 1, timeout=10)
        q = _rows(dash, "queues")[0]
        assert q["queued"] == 3 and q["workers"] == 1
        nq.gather(waiting + [running], timeout=30)
        wait_until(lambda: _rows(dash, "queues")[0]["queued"] == 0 and _rows(dash, "queues")[0]["running"] == 0,
                   timeout=10)
        w = _rows(dash, "workers")[0]
        # processed counts are current (pushed by the status feed), not stuck until the next heartbeat
        wait_until(lambda: _rows(dash, "workers")[0]["processed"] >= 4, timeout=10)
        assert w["load"].endswith("/1")
    finally:
        dash.close()


def test_charts_recent_jobs_task_stream_and_details(nb_client, thread_worker):
    worker = thread_worker("default", concurrency=2)
    dash = dashboard(nb_client, refresh=0.3, history=60)
    try:
        g = nq.map(jobs.add, range(6), range(6))
        bad = nq.submit(jobs.boom, "for the details")
        g.wait(30)
        with pytest.raises(ValueError):
            bad.result(timeout=30)
        wait_until(lambda: len(_rows(dash, "recent")) == 7 and
                   all(r["status"] in ("succeeded", "failed") for r in _rows(dash, "recent")), timeout=10)
        wait_until(lambda: len(dash.state()["throughput"]["finished"]) >= 2, timeout=10)
        view = dash.state()
        assert view["lanes"] == [worker.worker_id] and len(view["stream"]) == 7
        html = dash.to_html()
        assert "Finished jobs/s" in html and "Queued jobs" in html and "naq-task-stream" in html
        assert html.count("<rect") >= 7 and "naq-load" in html
        assert all(r["duration"].endswith("s") for r in _rows(dash, "recent"))
        dash.detail_buttons[bad.job_id].click()
        wait_until(lambda: "naq-job-detail" in (dash.state().get("detail") or ""), timeout=10)
        detail = dash.state()["detail"]
        assert "for the details" in detail and "Traceback" in detail and "&#x27;for the details&#x27;" in detail
    finally:
        dash.close()


def test_cluster_stop_leaves_a_stopped_static_dashboard():
    """Row 8: after cluster.stop() the dashboard says so and is no longer a live widget."""
    c = nq.local(workers=1, store_dir=None)
    try:
        dash = nq.dashboard(refresh=0.5)
        assert "(live," in dash.to_text()
    finally:
        c.stop()
    assert dash.closed and "stopped: its nq.local() cluster was stopped" in dash.to_text()
    assert "application/vnd.jupyter.widget-view+json" not in dash._repr_mimebundle_()
    assert "state=stopped" in repr(c)


def test_resume_starts_from_the_next_due_time(nb_client):
    """Row 7: runs missed while paused are not released on resume (even within the misfire grace)."""
    import time as _t
    sched = schedule_sync(jobs.add, 1, 2, interval=0.5, client=nb_client)
    from naq_nb.client.scheduling import pause_scheduled_job_sync, resume_scheduled_job_sync
    pause_scheduled_job_sync(sched, client=nb_client)
    due = list_scheduled_sync(client=nb_client)[0]["next_run"]
    wait_until(lambda: _t.time() > due + 1.0, timeout=10)  # three due times pass while paused
    t_resume = _t.time()
    resume_scheduled_job_sync(sched, client=nb_client)
    row = list_scheduled_sync(client=nb_client)[0]
    assert row["next_run"] > t_resume and row["runs"] == 0 and not row["paused"]


def test_the_static_last_view_tells_the_queues_at_the_close_not_at_the_last_tick(nb_client):
    """Queue depths are read every ``refresh`` seconds; the view a close leaves (what a saved notebook
    keeps) read them once more. A finished sweep's stopped dashboard still showed 1,697 jobs queued."""
    dash = dashboard(nb_client, refresh=600)  # no tick during the test: only the open and the close read
    futs = [nq.options(queue="idle").submit(jobs.add, i, 1) for i in range(3)]  # no worker serves "idle"
    nb_client.flush_sync()
    wait_until(lambda: "idle" in [q["queue"] for q in _rows(dash, "queues")])  # a status record named it
    dash.close()
    assert [q["queued"] for q in _rows(dash, "queues") if q["queue"] == "idle"] == [3]
    assert re.search(r"\n  idle +3 ", dash.to_text())
    for f in futs:
        f.cancel()
