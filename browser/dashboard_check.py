"""The dashboard page in a real browser: ``naq dashboard`` (Voilà) against a local setup.

The page must load and show the worker; clicking the failed job's Requeue
button must take the job out of the failed stream and run it again, and the
schedule's Pause button must pause it; both are verified through NATS, not
through the page.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

from harness import chromium_page, free_port, log, wait_until

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent

__all__ = ["check_dashboard"]


def _line(proc: subprocess.Popen, timeout: float, what: str) -> str:
    """The next stdout line of ``proc`` within ``timeout`` seconds."""
    q: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: q.put(proc.stdout.readline()), daemon=True).start()
    try:
        line = q.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError(f"{what}: no output within {timeout:g}s") from None
    if not line:
        raise RuntimeError(f"{what} exited (code {proc.wait()}): {proc.stderr.read()[-2000:]}")
    return line


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def check_dashboard(out_dir: Path) -> list[str]:
    """Run the check; returns failures (empty = pass). Screenshot: ``out_dir/dashboard.png``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    fixture = subprocess.Popen([sys.executable, str(HERE / "cluster_fixture.py")], env=env, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dash = None
    try:
        info = json.loads(_line(fixture, 120, "cluster fixture"))
        log(f"local setup at {info['url']}: worker {info['worker_id']}, failed job {info['failed_job']}")
        port = free_port()
        # The local server requires its generated credentials: they go through the environment,
        # as to any process of the cluster, never on a command line.
        dash = subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "dashboard", "--no-browser",
                                 "--port", str(port)],
                                env={**env, "NAQ_NATS_URL": info["auth_url"]}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = _line(dash, 120, "naq dashboard")
        page_url = f"http://127.0.0.1:{port}/"
        if page_url not in line:
            return [f"naq dashboard printed {line!r}, not its URL {page_url}"]
        log(f"naq dashboard serves {page_url}")
        return _in_browser(page_url, info, out_dir)
    finally:
        _stop(dash)
        if fixture.poll() is None and fixture.stdin:
            fixture.stdin.close()  # the fixture stops its cluster when stdin closes
        _stop(fixture)


def _in_browser(page_url: str, info: dict, out_dir: Path) -> list[str]:
    from naq_nb.client.client import Client
    from naq_nb.client.scheduling import list_scheduled_sync

    failures: list[str] = []
    client = Client(info["auth_url"])  # the checker is one more client of the local cluster
    out_dir.mkdir(parents=True, exist_ok=True)
    with chromium_page() as page:
        try:
            page.goto(page_url, wait_until="domcontentloaded", timeout=120_000)
            page.get_by_text(info["worker_id"]).first.wait_for(timeout=120_000)
            log("page shows the worker")
            requeue = page.locator(".naq-failed-button")
            requeue.first.wait_for(timeout=30_000)
            if requeue.count() != 1:
                failures.append(f"expected one Requeue button, found {requeue.count()}")
            requeue.first.click()
            log("clicked Requeue")
            wait_until(lambda: not any(f["job_id"] == info["failed_job"] for f in client.failed_sync()), 30,
                       "the failed job leaves the failed stream")
            status = wait_until(lambda: (s := client.status_sync(info["failed_job"]))["status"] == "succeeded"
                                and s, 60, "the requeued job runs again and succeeds")
            if status.get("requeued_from") is None and status.get("attempts") is None:
                failures.append(f"status record does not show a requeue: {status}")
            page.get_by_text(f"requeued {info['failed_job']}").first.wait_for(timeout=30_000)
            log("requeued job ran again and succeeded (checked through NATS)")

            # charts and the task stream fill in as the background jobs run
            wait_until(lambda: page.locator("svg.naq-chart polyline").count() >= 2, 60, "both charts draw lines")
            wait_until(lambda: page.locator("svg.naq-task-stream rect").count() >= 3, 60, "task stream bars")
            details = page.locator(".naq-recent-button")
            details.first.wait_for(timeout=30_000)
            details.first.click()
            page.locator(".naq-job-detail").first.wait_for(timeout=30_000)
            log("charts, task stream and a job's Details panel shown")

            page.locator(".naq-schedules-button").first.click()
            wait_until(lambda: list_scheduled_sync(client=client)[0]["paused"], 30, "Pause pauses the schedule")
            page.locator(".naq-schedules-button", has_text="Resume").first.wait_for(timeout=30_000)
            log("Pause paused the schedule (checked through NATS)")
            if page.get_by_text("Loading widget").count():
                failures.append("'Loading widget...' still on the page")
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            page.set_viewport_size({"width": 1400, "height": 2600})  # the whole page, charts on top
            page.evaluate("() => { window.scrollTo(0, 0); document.querySelectorAll('*').forEach("
                          "e => { if (e.scrollTop) e.scrollTop = 0; }); }")
            page.wait_for_timeout(500)
            page.screenshot(path=str(out_dir / "dashboard.png"), full_page=True)
            log(f"screenshot -> {out_dir / 'dashboard.png'}")
            if page.naq_console:
                log(f"browser console errors: {page.naq_console[:5]}")
            client.close_sync()
    return failures
