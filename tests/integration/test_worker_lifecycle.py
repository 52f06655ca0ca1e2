"""Worker lifecycle: heartbeats, graceful and immediate stops, stepping its loops by hand."""

import asyncio
import signal

import pytest

from naq_nb.core.broker import Broker
from naq_nb.core.queue import Queue
from naq_nb.core.registry import list_workers
from naq_nb.core.results import wait_for_result
from naq_nb.core.worker import Worker

import jobs
from helpers import Services, pid_gone, worker_process


async def _until(cond, timeout=15.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if await cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_heartbeat_record_and_removal_on_stop(broker, start_worker):
    w = await start_worker(["default", "other"], concurrency=3, name="box1")
    [rec] = await list_workers(broker)
    assert rec["id"] == w.worker_id and rec["queues"] == ["default", "other"] and rec["concurrency"] == 3
    assert rec["state"] == "idle" and rec["heartbeat_age"] < 5 and rec["name"] == "box1"
    w.request_stop()
    await _until(lambda: _no_workers(broker))


async def _no_workers(broker):
    return await list_workers(broker) == []


# A closed terminal or dropped ssh session sends SIGHUP: it killed the worker on the spot, its
# running job stayed 'running' until the ack wait handed it to another worker. Now it stops gracefully
# as SIGTERM does.
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
async def test_a_stop_signal_lets_the_running_job_finish(broker, nats_server, tmp_path, sig):
    runs = tmp_path / "runs"
    proc = worker_process(nats_server.url, "-c", "2", "--grace-period", "20")
    try:
        await _until(lambda: _has_workers(broker))
        j = await Queue(broker).enqueue(jobs.mark, str(runs), sig.name, 1.5)
        await _until(lambda: _exists(runs))
        proc.send_signal(sig)
        assert (await wait_for_result(broker, j.job_id, 20)).unwrap() == sig.name
        assert await asyncio.get_running_loop().run_in_executor(None, proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_a_worker_started_under_nohup_keeps_ignoring_sighup(broker, nats_server, tmp_path):
    def nohup():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = worker_process(nats_server.url, "-c", "1", preexec_fn=nohup)
    try:
        await _until(lambda: _has_workers(broker))
        proc.send_signal(signal.SIGHUP)
        j = await Queue(broker).enqueue(jobs.add, 1, 2)  # still serving after the SIGHUP
        assert (await wait_for_result(broker, j.job_id, 20)).unwrap() == 3
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.get_running_loop().run_in_executor(None, proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_second_signal_stops_at_once_and_hands_job_back(broker, nats_server, start_worker, tmp_path):
    runs = tmp_path / "runs"
    proc = worker_process(nats_server.url, "-c", "2", "--grace-period", "60")
    try:
        await _until(lambda: _has_workers(broker))
        await Queue(broker).enqueue(jobs.mark, str(runs), "long", 8)
        await _until(lambda: _lines(runs, 1))
        proc.send_signal(signal.SIGTERM)
        # Two signals sent back to back coalesce into one; send the second once the first is seen.
        await asyncio.get_running_loop().run_in_executor(None, _read_until, proc, "stopping gracefully")
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 15)
        assert rc == 0, "the second signal ends the worker at once, not after the 60 s grace period"
    finally:
        if proc.poll() is None:
            proc.kill()
    # Handed back with a nak (not left to the ack wait): another worker starts it right away.
    await start_worker()
    await _until(lambda: _lines(runs, 2), timeout=10)


def _read_until(proc, text):
    for line in proc.stdout:
        if text in line.decode(errors="replace"):
            return
    raise AssertionError(f"worker exited without printing {text!r}")


async def _lines(path, n):
    return path.exists() and len(path.read_text().split()) >= n


async def _has_workers(broker):
    return bool(await list_workers(broker))


async def _exists(path):
    return path.exists()


async def _running(broker, job_id):
    from naq_nb.core.queue import get_status
    try:
        return (await get_status(broker, job_id))["status"] == "running"
    except Exception:
        return False


async def test_loops_step_with_an_injected_clock(broker, settings):
    from naq_nb.core.worker import Worker
    now = [1000.0]
    w = Worker("default", settings=settings, concurrency=2, clock=lambda: now[0])
    await w.start()
    try:
        feed = w._feeds["default"]
        assert feed.credit == 4, "free slots plus prefetch are requested at start"
        now[0] += 60  # far past the request's expiry: the feed forgets it and asks again
        await w.pull_once(now[0])
        assert feed.credit == 4 and feed._current[0] == "2"
        await w.heartbeat_once(now[0])
        assert w._last_heartbeat == now[0]
        await w.keepalive_once(now[0])
        assert w._last_keepalive == now[0]
    finally:
        await w.shutdown()


async def test_jobs_a_stop_handed_back_run_at_once_after_a_server_restart(own_nats_server, settings, tmp_path):
    """A stop naks the jobs it held but had not started. A nak without a delay lives only in the
    server's memory: a server stopped right after (nq.local()'s stop, a restart) held such jobs for
    their whole ack_wait once back. Here that is 10 minutes; the waits below are far shorter."""
    s = settings.with_(ack_wait=600.0)
    runs = tmp_path / "runs"
    b = await Broker.connect(settings=s)
    services = Services()
    try:
        await b.ensure_layout()
        await services.start(Worker("default", settings=s, concurrency=1, prefetch=2, execution="threads"))
        made = [await Queue(b).enqueue(jobs.mark, str(runs), f"j{i}", 1.0) for i in range(4)]
        await _until(lambda: _lines(runs, 1))
        await services.stop_all(graceful=True)  # the running job finishes; the held ones are handed back
    finally:
        await b.close()
    own_nats_server.restart()  # a graceful stop of the server, then the same store again
    b = await Broker.connect(settings=s)
    services = Services()
    try:
        await services.start(Worker("default", settings=s, concurrency=4, execution="threads"))
        for j in made:
            assert (await wait_for_result(b, j.job_id, 60)).status == "succeeded"
    finally:
        await services.stop_all(graceful=False)
        await b.close()


async def test_a_worker_whose_server_is_gone_stops_without_waiting_out_a_timeout(own_nats_server, start_worker,
                                                                               caplog):
    """Heartbeats cannot land, and its record cannot be removed (left to its TTL): neither is tried against a
    dead connection, where each would wait out a JetStream timeout and hold up the stop."""
    import logging
    w = await start_worker()
    own_nats_server.kill()
    await _until(lambda: asyncio.sleep(0, not w.broker.nc.is_connected))
    await w.heartbeat_once(w.clock())  # skipped, not sent to wait out JetStream's timeout and raise it
    with caplog.at_level(logging.DEBUG, logger="naq_nb.worker"):
        w.request_stop(graceful=False)
        await _until(lambda: asyncio.sleep(0, w.state == "stopped"), timeout=30)
    assert any("left to its TTL: not connected" in r.getMessage() for r in caplog.records)


async def test_a_loop_that_swallows_its_cancellation_does_not_hang_the_stop(start_worker):
    """nats-py's publish swallows a cancellation that lands inside it (a slot then waits for the next job
    forever): the stop cancels again until every loop has ended."""
    w = await start_worker()
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:  # as nats-py's _flush_pending does
            swallowed.set()
        await asyncio.sleep(3600)

    w._tasks.append(asyncio.ensure_future(stubborn()))
    w.request_stop(graceful=False)
    await _until(lambda: asyncio.sleep(0, w.state == "stopped"), timeout=30)
    assert swallowed.is_set()


async def test_a_worker_whose_connection_closes_for_good_stops_with_an_error(settings):
    # nats-py closes a connection for good when the server cuts it for a protocol violation (a message
    # over max_payload) or reconnects run out: the worker sat alive and idle, taking no job, for ever.
    from naq_nb.core.errors import NaqConnectionError
    from naq_nb.core.worker import Worker as CoreWorker

    w = CoreWorker("default", settings=settings, concurrency=1, execution="threads")
    run = asyncio.ensure_future(w.run())
    await asyncio.wait_for(_started(w), 30)
    await w.broker.nc.close()  # as nats-py does when it gives up
    with pytest.raises(NaqConnectionError, match="connection was closed for good"):
        await asyncio.wait_for(run, 30)
    assert w.execution is not None and not w.execution.active


async def _started(w) -> None:
    while getattr(w, "started", None) is None:
        await asyncio.sleep(0.01)
    await w.started.wait()


@pytest.mark.parametrize("served_by_run", [False, True])
async def test_stop_returns_once_the_worker_has_stopped(broker, settings, served_by_run):
    """``await w.stop()`` after ``await w.start()`` (or under ``run()``) returns a stopped worker: its
    watchdog thread, job processes and heartbeat gone. It only asked before, so a worker started with
    start() alone was never shut down, and its watchdog went on logging into later tests."""
    w = Worker("default", settings=settings, concurrency=1)
    task = None
    if served_by_run:
        task = asyncio.ensure_future(w.run())
        await _until(lambda: _true(w.started is not None and w.started.is_set()))
    else:
        await w.start()
    job = await Queue(broker, "default").enqueue(jobs.add, 1, 2)
    assert (await wait_for_result(broker, job.job_id, timeout=15)).value() == 3
    pids = list(w.execution.pool.pids)
    assert pids and w.watchdog is not None
    await w.stop()
    assert w.state == "stopped"
    assert not w.watchdog._thread.is_alive()
    assert all(pid_gone(pid) for pid in pids)
    assert await list_workers(broker) == []
    await w.stop()  # again: nothing left to do
    if task is not None:
        await asyncio.wait_for(task, 5)


async def _true(value):
    return value



@pytest.fixture
def held_start(monkeypatch):
    """Holds a worker's start() where it makes its queue's consumer (its job processes are up by then)
    until ``release`` is set; ``reached`` is set once it got there."""
    reached, release = asyncio.Event(), asyncio.Event()
    ensure = Broker.ensure_consumer

    async def held(self, queue):
        reached.set()
        await release.wait()
        return await ensure(self, queue)

    monkeypatch.setattr(Broker, "ensure_consumer", held)
    return reached, release


async def _yield_to_others(rounds: int = 20) -> None:
    """Loop turns, no time: what is ready to run (a stop with nothing to wait for) runs to its end."""
    for _ in range(rounds):
        await asyncio.sleep(0)


@pytest.mark.parametrize("how", ["stop", "request_stop", "stop_under_run"])
async def test_a_stop_while_start_is_running_stops_the_worker(broker, settings, held_start, how):
    """stop() (or request_stop()) while start() was still setting up returned at once; with start()
    alone nothing waited on the request afterwards, so the worker served for ever (its watchdog thread,
    job processes and heartbeat left behind), and under run() stop() returned before it had stopped."""
    reached, release = held_start
    w = Worker("default", settings=settings, concurrency=1)
    starting = asyncio.ensure_future(w.run() if how == "stop_under_run" else w.start())
    stopping = None
    try:
        await asyncio.wait_for(reached.wait(), 30)
        pids = list(w.execution.pool.pids)
        if how == "request_stop":
            w.request_stop()
        else:
            stopping = asyncio.ensure_future(w.stop())
        await _yield_to_others()
        assert stopping is None or not stopping.done(), "stop() returned while start() was still running"
        release.set()
        await asyncio.wait_for(starting, 60)
        if stopping is not None:
            await asyncio.wait_for(stopping, 60)
        assert w.state == "stopped"
        assert w.watchdog is None or not w.watchdog._thread.is_alive()
        assert pids and all(pid_gone(pid) for pid in pids)
        assert await list_workers(broker) == []
    finally:
        release.set()
        if w.state != "stopped" and w.started is not None and w.started.is_set():
            await w.shutdown(graceful=False)  # (the unfixed worker, left serving)
        for t in (starting, stopping):
            if t is not None and not t.done():
                t.cancel()


async def test_two_stops_at_once_shut_the_worker_down_once(broker, settings):
    """Two stop() calls at once after start() both ran the whole shutdown (its state was 'stopping',
    not 'stopped', when the second began): job processes and connection closed twice."""
    w = Worker("default", settings=settings, concurrency=1)
    await w.start()
    closes = []
    close = w.execution.close

    async def counted_close():
        closes.append(1)
        await close()

    w.execution.close = counted_close
    await asyncio.wait_for(asyncio.gather(w.stop(), w.stop()), 60)
    assert w.state == "stopped" and len(closes) == 1
    await w.stop()  # and a later one: nothing left to do
    assert len(closes) == 1
