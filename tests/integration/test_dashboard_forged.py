"""``nq.dashboard()`` with forged records written by hand into the buckets and the failed stream.

A forged worker record used to stop the dashboard from opening, or (arriving live) to kill its
redraw loop for good; so did a status record with a time that is no finite number in range, or a
queue that is no string. Bad worker records are now left out; such status fields show as missing,
and the valid entries around them stay in view. (A failed entry's numeric reason is made text by
``core.failed`` itself, so it cannot reach the dashboard's rows through the stream.)
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from naq_nb.notebook.dashboard import Dashboard, dashboard_async

from helpers import eventually


def _heartbeat(**over) -> bytes:
    """A valid worker record (``over`` replaces or forges fields)."""
    rec = {"id": "w-good", "name": "w", "host": "h", "queues": ["default"], "concurrency": 2,
           "heartbeat_at": time.time(), "stats": {"processed": 3}, "running": []}
    return json.dumps({**rec, **over}).encode()


FORGED_WORKERS = {
    "heartbeat_at_str": _heartbeat(id="w-bad", heartbeat_at="abc"),
    "concurrency_str": _heartbeat(id="w-bad", concurrency="x"),
    "stats_list": _heartbeat(id="w-bad", stats=[1]),
    "stats_value_str": _heartbeat(id="w-bad", stats={"processed": "many"}),
    "queues_int": _heartbeat(id="w-bad", queues=5),
    "queues_nested": _heartbeat(id="w-bad", queues=[[1]]),
    "record_list": b"[1]",
}


async def _put_worker(broker, key: str, value: bytes) -> None:
    await (await broker.kv(broker.layout.workers_bucket)).put(key, value)


async def _put_status(broker, job_id: str, **rec) -> None:
    record = {"id": job_id, "queue": "default", **rec}
    await (await broker.kv(broker.layout.status_bucket)).put(job_id, json.dumps(record).encode())


def _rows(dash: Dashboard, section: str) -> list[dict]:
    return dash.state().get(section, [])


async def _until(pred, what: str, timeout: float = 10.0) -> None:
    async def check() -> bool:
        return bool(pred())

    await eventually(check, timeout=timeout, what=what)


async def _still_live(dash: Dashboard, broker, job_id: str = "legit") -> None:
    """A valid status put after the forged records still reaches the view: the redraw loop lives."""
    now = time.time()
    await _put_status(broker, job_id, status="succeeded", started_at=now - 1, finished_at=now)
    await _until(lambda: any(r["job_id"] == job_id for r in _rows(dash, "recent")), f"{job_id} in the recent rows")
    assert not [t for t in dash._tasks if t.done()], "a feed or redraw task ended"


# --- worker records ------------------------------------------------------------------------------
@pytest.mark.parametrize("forged", list(FORGED_WORKERS))
@pytest.mark.parametrize("when", ["at_open", "live"])
async def test_forged_worker_record_is_skipped(nb_client, broker, forged, when):
    await _put_worker(broker, "w-good", _heartbeat())
    if when == "at_open":
        await _put_worker(broker, "w-bad", FORGED_WORKERS[forged])
    dash = await dashboard_async(nb_client, refresh=0.5)
    try:
        if when == "live":
            await _put_worker(broker, "w-bad", FORGED_WORKERS[forged])
        await _still_live(dash, broker)
        assert [w["worker_id"] for w in _rows(dash, "workers")] == ["w-good"]
        w = _rows(dash, "workers")[0]
        assert w["concurrency"] == 2 and w["processed"] == 3
        assert [q["queue"] for q in _rows(dash, "queues")] == ["default"]
        assert _rows(dash, "queues")[0]["workers"] == 1
    finally:
        await dash.close_async()
    assert dash.closed and "(closed," in dash.to_text()


async def test_forged_worker_record_replaces_a_valid_one(nb_client, broker):
    # The forged record is the key's current value: the worker it overwrote is gone from the view.
    await _put_worker(broker, "w-good", _heartbeat())
    dash = await dashboard_async(nb_client, refresh=0.5)
    try:
        assert [w["worker_id"] for w in _rows(dash, "workers")] == ["w-good"]
        await _put_worker(broker, "w-good", _heartbeat(heartbeat_at="abc"))
        await _until(lambda: _rows(dash, "workers") == [], "the forged worker left out")
        await _still_live(dash, broker)
    finally:
        await dash.close_async()


# --- status records (pushed live only: the dashboard reads no status snapshot) ------------------
@pytest.mark.parametrize("forged", [
    pytest.param({"status": "succeeded", "started_at": 1.0, "finished_at": "x"}, id="times_str"),
    pytest.param({"status": "succeeded", "started_at": 10**400, "finished_at": float("nan")}, id="times_out_of_range"),
    pytest.param({"status": "running", "worker": "w-good", "queue": ["q"], "started_at": 1.0}, id="queue_list"),
])
async def test_forged_status_record_shows_with_missing_fields(nb_client, broker, forged):
    await _put_worker(broker, "w-good", _heartbeat())
    dash = await dashboard_async(nb_client, refresh=0.5)
    try:
        await _put_status(broker, "forged", **forged)
        await _still_live(dash, broker)
        rows = {r["job_id"]: r for r in _rows(dash, "recent")}
        assert rows["forged"]["status"] == forged["status"]
        assert rows["legit"]["duration"].endswith(" s") and rows["legit"]["worker"] == "-"
        assert "forged" in dash.to_text() and "naq-task-stream" in dash.to_html()
    finally:
        await dash.close_async()
    assert dash.closed and "(closed," in dash.to_text()



# --- markup in stored text ---------------------------------------------------------------------
MARKUP = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"


async def test_markup_in_forged_records_is_shown_as_text(nb_client, broker):
    # The dashboard is a page others may open (``naq dashboard`` serves it): text anyone with write
    # access to a bucket stored must reach it as text. The record's own "id" claims markup too; the
    # job is named by its key, which can hold none, and its detail panel (a click) escapes its fields.
    await _put_worker(broker, "w-good", _heartbeat(name=MARKUP, host=MARKUP))
    dash = await dashboard_async(nb_client, refresh=0.5)
    try:
        now = time.time()
        await _put_status(broker, "forged", id=MARKUP, status="failed", func=MARKUP, name=MARKUP, worker=MARKUP,
                          error=MARKUP, args=MARKUP, message=MARKUP, logs=[MARKUP, 3], traceback=MARKUP,
                          started_at=now - 1, finished_at=now)
        await _still_live(dash, broker)
        assert sorted(r["job_id"] for r in _rows(dash, "recent")) == ["forged", "legit"]
        await asyncio.to_thread(dash.detail_buttons["forged"].click)
        await _until(lambda: "naq-job-detail" in (dash.state().get("detail") or ""), "the detail panel")
        page, detail = dash.to_html(), dash.state()["detail"]
        assert "<img" not in page and ESCAPED in page
        # function, worker, args, logs, error, traceback
        assert "<img" not in detail and detail.count(ESCAPED) >= 6, detail
        assert MARKUP in dash.to_text()  # the plain text keeps it as it is
    finally:
        await dash.close_async()


async def test_a_failed_detail_read_is_shown_as_text(nb_client, broker, monkeypatch):
    # What a failed read says can quote what was stored; it is shown as text too.
    import naq_nb.notebook.dashboard_actions as dashboard_mod

    async def failing_read(client, job_id):
        raise ValueError(f"cannot read {MARKUP}")

    monkeypatch.setattr(dashboard_mod, "fetch_detail", failing_read)
    dash = await dashboard_async(nb_client, refresh=0.5)
    try:
        await _still_live(dash, broker)
        await asyncio.to_thread(dash.detail_buttons["legit"].click)
        await _until(lambda: "cannot read" in (dash.state().get("detail") or ""), "the failed read's line")
        detail = dash.state()["detail"]
        assert "<img" not in detail and ESCAPED in detail and "ValueError" in detail
    finally:
        await dash.close_async()


# --- a redraw that fails ---------------------------------------------------------------------------
async def test_a_failed_redraw_warns_and_the_loop_goes_on(nb_client, broker, caplog):
    # Whatever a future record breaks in the rows: one redraw fails, the next one draws again.
    dash = await dashboard_async(nb_client, refresh=0.5)
    build, failures = dash._build_view, []

    def fail_once(now: float) -> dict:
        if not failures:
            failures.append(now)
            raise TypeError("a forged field")
        return build(now)

    dash._build_view = fail_once  # type: ignore[method-assign]
    try:
        with caplog.at_level("WARNING", logger="naq_nb.dashboard"):
            warning = "redraw failed, the last view stays: TypeError: a forged field"
            await _until(lambda: warning in caplog.text, "the redraw's warning")
        await _still_live(dash, broker)
    finally:
        await dash.close_async()
    assert dash.closed and "(closed," in dash.to_text()


async def test_workers_that_stopped_or_died_are_forgotten_with_their_counts(nb_client, broker):
    """A dashboard open for days kept a running set and a counter for every worker id it ever saw."""
    dash = await dashboard_async(nb_client, refresh=0.2)
    try:
        for i in range(20):  # died: their last heartbeats are older than the worker TTL
            await _put_worker(broker, f"w-dead{i}", _heartbeat(id=f"w-dead{i}", heartbeat_at=time.time() - 3600,
                                                              running=[f"job-dead{i}"]))
            await _put_status(broker, f"job-gone{i}", status="succeeded", worker=f"w-dead{i}", finished_at=time.time())
        await _put_worker(broker, "w-stopped", _heartbeat(id="w-stopped", running=["job-s"]))
        await _put_worker(broker, "w-good", _heartbeat())
        await _until(lambda: "w-stopped" in dash._workers and "w-good" in dash._running, "the live workers seen")
        await (await broker.kv(broker.layout.workers_bucket)).delete("w-stopped")  # a graceful stop's delete

        def forgotten() -> bool:
            names = set(dash._workers) | set(dash._running) | set(dash._since_hb)
            return names == {"w-good"}

        await _until(forgotten, "only the live worker kept")
        await _until(lambda: [w["worker_id"] for w in _rows(dash, "workers")] == ["w-good"], "its row shown")
    finally:
        await dash.close_async()
