"""The naq CLI: help everywhere, one clear line when the server is unreachable, admin commands."""

import asyncio
import json
import os
import socket
import subprocess
import sys

import pytest

from naq_nb.core.queue import Queue
from naq_nb.core.results import wait_for_result

import jobs
from helpers import ROOT, eventually


def naq(*args, url=None, timeout=60, env=None):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", **(env or {})}
    if url:
        env["NAQ_NATS_URL"] = url
    return subprocess.run([sys.executable, "-m", "naq_nb.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("cmd", ["worker", "server", "purge", "list-workers", "jobs", "failed", "cancel",
                                 "scheduler", "list-scheduled", "job-control", "layout"])
def test_help_everywhere(cmd):
    out = naq(cmd, "--help")
    assert out.returncode == 0 and "usage: naq" in out.stdout


def test_unreachable_server_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = naq("list-workers", "--nats-url", f"nats://127.0.0.1:{port}")
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "cannot connect to NATS" in out.stderr
    assert "connection refused: nothing listens there" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_host_name_that_does_not_resolve_is_named():
    # (.invalid never resolves, RFC 2606)
    out = naq("list-workers", "--nats-url", "nats://no-such-host.invalid:4222", env={"NAQ_CONNECT_TIMEOUT": "0.5"})
    assert out.returncode == 1 and out.stderr.strip().count("\n") == 0, out.stderr
    assert "a host name does not resolve" in out.stderr and "check the URL" in out.stderr, out.stderr


async def test_failed_list_and_requeue_and_purge(broker, nats_server, start_worker):
    await start_worker()
    j = await Queue(broker).enqueue(jobs.boom, "cli")
    await wait_for_result(broker, j.job_id, 10)
    out = naq("failed", "list", url=nats_server.url)
    assert out.returncode == 0 and j.job_id in out.stdout and "ValueError: cli" in out.stdout
    out = naq("failed", "requeue", j.job_id, url=nats_server.url)
    assert out.returncode == 0 and f"requeued {j.job_id}" in out.stdout
    out = naq("jobs", "--id", j.job_id, url=nats_server.url)
    assert out.returncode == 0 and "status" in out.stdout
    await Queue(broker, "p").enqueue_many([(jobs.add, (1, 1), {})] * 3)
    out = naq("jobs", url=nats_server.url)  # a queue nobody serves is listed, not hidden (issue 11 row 9)
    row = next(line.split() for line in out.stdout.splitlines() if line.split()[:1] == ["p"])
    assert row == ["p", "3", "0", "0"], out.stdout
    out = naq("purge", "p", url=nats_server.url)
    assert "purged 3 job(s)" in out.stdout
    out = naq("list-workers", url=nats_server.url)
    assert out.returncode == 0 and "default" in out.stdout


async def test_failed_requeue_takes_its_ids_after_the_options_too(broker, nats_server, start_worker):
    w = await start_worker()
    a, b = await Queue(broker).enqueue(jobs.boom, "a"), await Queue(broker).enqueue(jobs.boom, "b")
    for j in (a, b):
        await wait_for_result(broker, j.job_id, 10)
    await w.stop()  # requeued jobs stay queued
    out = naq("failed", "requeue", "-u", nats_server.url, a.job_id)
    assert out.returncode == 0 and f"requeued {a.job_id}" in out.stdout, out.stderr
    out = naq("failed", "requeue", "-q", "default", b.job_id, url=nats_server.url)
    assert out.returncode == 0 and f"requeued {b.job_id}" in out.stdout, out.stderr
    out = naq("failed", "requeue", "--bogus", a.job_id, url=nats_server.url)  # an unknown option still fails
    assert out.returncode == 2 and "unrecognized arguments: --bogus" in out.stderr
    out = naq("purge", "-u", nats_server.url, "default", "extra-queue")  # other commands: as before
    assert out.returncode == 0, out.stderr


async def test_failed_entries_after_a_requeued_one_stay_listed_and_named(broker, nats_server, start_worker):
    # A requeue deletes its entry from the failed stream; the entries after that gap are still
    # listed and requeueable, and an all-digit job id names that job, not the sequence.
    from naq_nb.core.failed import list_failed
    w = await start_worker()
    q = Queue(broker)
    for jid in ("a1", "2", "x3", "x4"):  # one at a time: the failed stream keeps this order
        await wait_for_result(broker, (await q.configure(job_id=jid).enqueue(jobs.boom, jid)).job_id, 10)
    seqs = {e["job_id"]: e["seq"] for e in await list_failed(broker)}
    assert list(seqs) == ["a1", "2", "x3", "x4"], seqs
    await w.stop()  # requeued jobs stay queued
    await eventually(lambda: asyncio.sleep(0, w.state == "stopped"), what="worker stopped")
    url = nats_server.url
    out = naq("failed", "requeue", "x3", url=url)  # a gap in the middle of the stream
    assert out.returncode == 0 and "requeued x3" in out.stdout, out.stderr
    out = naq("failed", "list", url=url)
    assert all(jid in out.stdout for jid in ("a1", "2", "x4")), out.stdout
    out = naq("failed", "requeue", "2", url=url)  # job "2", though sequence 2 exists too
    assert out.returncode == 0 and out.stdout.split() == ["requeued", "2"], out.stdout + out.stderr
    out = naq("failed", "requeue", f"#{seqs['a1']}", f"#{seqs['a1']}", url=url)
    assert "requeued a1" in out.stdout, out.stdout  # printed before the second one fails
    assert out.returncode == 1 and f"no failed entry with sequence {seqs['a1']}" in out.stderr
    for bad in ("0", "#0", "99999999999999999999999"):
        out = naq("failed", "requeue", bad, url=url)
        assert out.returncode == 1 and "no failed entry with sequence" in out.stderr and "Traceback" not in out.stderr
    out = naq("failed", "requeue", url=url)
    assert out.returncode == 2 and "name job ids or sequences" in out.stderr
    assert [e["job_id"] for e in await list_failed(broker)] == ["x4"], "nothing else was requeued"


def test_naq_server_in_the_foreground(tmp_path):
    import re
    import signal
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "server", "--port", "0",
                             "--store-dir", str(tmp_path / "js")], env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"JetStream at nats://127\.0\.0\.1:(\d+)", line)
        assert m, line
        with socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=5) as s:
            assert s.recv(4) == b"INFO"
        # One server per store: a second one on it would answer from its own copy.
        second = naq("server", "--port", "0", "--store-dir", str(tmp_path / "js"), timeout=30)
        assert second.returncode == 2 and f"in use by process {proc.pid}" in second.stderr, second.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_naq_server_whose_nats_server_dies_says_how_and_removes_its_temporary_store():
    import re
    import signal
    from pathlib import Path
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "server", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        store = Path(re.search(r"\(store (\S+?)[;)]", line).group(1))
        assert store.is_dir(), line
        # (started from a keeper thread: a child of that thread's task)
        children = [c for t in Path(f"/proc/{proc.pid}/task").iterdir() for c in (t / "children").read_text().split()]
        nats_pid = next(int(c) for c in children if b"nats-server" in Path(f"/proc/{c}/cmdline").read_bytes())
        os.kill(nats_pid, signal.SIGKILL)
        assert proc.wait(15) == 1
        assert "nats-server exited (killed by signal 9)" in proc.stdout.read()
        assert not store.exists(), "its temporary store went with it"
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_list_scheduled_and_job_control(broker, nats_server):
    import naq_nb as nq
    url = nats_server.url
    job = await nq.schedule(jobs.add, 1, 2, cron="*/5 * * * *", nats_url=url)
    out = naq("list-scheduled", url=url)
    assert out.returncode == 0 and job.job_id in out.stdout and "*/5 * * * *" in out.stdout
    out = naq("job-control", job.job_id, "pause", url=url)
    assert out.returncode == 0 and "paused" in out.stdout
    assert (await nq.list_scheduled(nats_url=url))[0]["paused"] is True
    out = naq("job-control", job.job_id, "reschedule", "--interval", "30", url=url)
    assert out.returncode == 0
    assert (await nq.list_scheduled(nats_url=url))[0]["interval"] == 30
    out = naq("job-control", job.job_id, "cancel", url=url)
    assert out.returncode == 0 and await nq.list_scheduled(nats_url=url) == []
    out = naq("job-control", job.job_id, "resume", url=url)
    assert out.returncode == 1 and "no scheduled job" in out.stderr and "Traceback" not in out.stderr
    out = naq("job-control", "x", "reschedule", url=url)
    assert out.returncode != 0 and "--cron" in out.stderr


def test_list_scheduled_names_a_bad_queue_or_id_filter():
    """`-q 'a,b'` or `-j 'x y'` (no schedule can have them) printed "(none)" and exit 0, as for a queue
    with nothing scheduled: a typo looked like an empty calendar. Refused before connecting now."""
    for flag, value, what in (("-q", "default,other", "invalid queue name"), ("-j", "my job", "invalid job id")):
        out = naq("list-scheduled", flag, value, url="nats://127.0.0.1:1")
        assert out.returncode == 2 and what in out.stderr and repr(value) in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and "cannot connect" not in out.stderr


@pytest.fixture
def server_without_jetstream(tmp_path):
    """A real nats-server started without JetStream (``-js`` left out), with its monitoring port."""
    import json
    import time
    import urllib.request

    from naq_nb.core.server import find_server_binary, free_port

    port, mon = free_port(), free_port()
    proc = subprocess.Popen([find_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-m", str(mon)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def connections() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{mon}/connz", timeout=5) as r:
            return json.load(r)["num_connections"]

    deadline = time.monotonic() + 20
    while True:  # until the server answers on its monitoring port
        try:
            connections()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield f"nats://127.0.0.1:{port}", connections
    proc.kill()
    proc.wait(10)


def test_a_server_without_jetstream_gets_one_clear_line(server_without_jetstream):
    url, _ = server_without_jetstream
    out = naq("worker", "q", url=url)
    assert out.returncode == 1
    assert "JetStream is not enabled" in out.stderr and "Traceback" not in out.stderr


def test_a_client_facing_a_server_without_jetstream_raises_and_keeps_no_connection(server_without_jetstream):
    import time

    from naq_nb.client.client import Client
    from naq_nb.core.errors import NaqConnectionError

    url, connections = server_without_jetstream
    c = Client(url)
    try:
        for _ in range(3):
            with pytest.raises(NaqConnectionError, match="JetStream is not enabled"):
                c.purge_sync("q")
        deadline = time.monotonic() + 10
        while connections() and time.monotonic() < deadline:  # the server notices closes in its own time
            time.sleep(0.05)
        assert connections() == 0
    finally:
        c.close_sync()


# A job's error is its own text (here: input it was given), and a status record is text anyone with
# write access chose: an escape sequence printed as it is rewrites the terminal (its title: OSC 0; the
# screen: CSI 2J), a carriage return overwrites a line, and a line break splits a table row.
HOSTILE = "\x1b]0;pwned\x07\x1b[2Jgone\rover\nnext"
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2Jgone\\rover"


async def test_stored_text_cannot_drive_the_terminal(broker, nats_server, start_worker):
    await start_worker()
    j = await Queue(broker).enqueue(jobs.boom, HOSTILE)
    await wait_for_result(broker, j.job_id, 10)
    await (await broker.kv(broker.layout.status_bucket)).put(
        "forged", json.dumps({"id": "forged", "queue": "default", "status": "failed", "func": HOSTILE,
                              "error": HOSTILE, "traceback": f"Traceback\n  {HOSTILE}"}).encode())
    listing = naq("failed", "list", "--traceback", url=nats_server.url)
    one = naq("jobs", "--id", "forged", url=nats_server.url)
    for out in (listing, one):
        assert out.returncode == 0, out.stderr
        assert "\x1b" not in out.stdout and "\x07" not in out.stdout and "\r" not in out.stdout
        assert SHOWN in out.stdout, out.stdout
    row = next(line for line in listing.stdout.splitlines() if line.startswith(f"{_seq(listing)} "))
    assert j.job_id in row and "ValueError: " + SHOWN[:20] in row  # its reason, escaped, on the row's line
    assert f"{SHOWN}\\nnext" in one.stdout.split("   error: ")[1].splitlines()[0]  # a one-line field
    assert f"  {SHOWN}\nnext" in one.stdout  # the traceback keeps its lines


def _seq(out) -> str:
    """The seq of the one row of a ``naq failed list`` table."""
    header, row = out.stdout.splitlines()[:2]
    assert header.startswith("SEQ")
    return row.split()[0]


async def test_jobs_id_of_a_schedule_whose_runs_failed_does_not_say_succeeded(broker, nats_server, settings,
                                                                                start_worker):
    """`naq jobs --id <schedule>` printed `status: succeeded` once a repeat=2 schedule had fired both
    runs, though both runs failed: the scheduler marks a schedule's own record succeeded when its last
    run is fired. It now says the schedule finished, and how its last run ended."""
    import time
    from naq_nb.core.scheduler import Scheduler
    from naq_nb.core.schedules import make_schedule, save_schedule
    T0 = time.time()
    s, body = make_schedule(Queue(broker).make_job(jobs.boom, ("scheduled",)), broker, interval=1.0, repeat=2, now=T0)
    await save_schedule(broker, s, body)
    sch = Scheduler(settings=settings, broker=broker, ha=False)
    await sch.prepare()
    fired = await sch.tick(T0 + 1.01) + await sch.tick(T0 + 2.01)
    assert len(fired) == 2
    await start_worker()
    for jid in fired:
        assert not (await wait_for_result(broker, jid, 30)).ok
    out = naq("jobs", "--id", s.id, url=nats_server.url)
    assert out.returncode == 0, out.stderr
    status = [ln for ln in out.stdout.splitlines() if ln.strip().startswith("status:")]
    assert status == [f"{'status':>12}: finished, last run failed"], out.stdout
    assert f"last_job_id: {fired[-1]}" in out.stdout


async def test_failed_requeue_all_takes_every_entry_and_a_cut_listing_says_so(broker, nats_server, start_worker):
    # With more failed entries than a listing shows (1,000), `requeue --all` requeued the first 1,000
    # and exited 0, and `naq failed` printed 1,000 rows as if they were all (seen with 10,500).
    from naq_nb.core.failed import list_failed

    async def count_failed(b):
        return len(await list_failed(b, limit=10**6))

    n = 1005
    w = await start_worker(concurrency=50, execution="threads")
    await Queue(broker).configure(max_retries=0).enqueue_many([(jobs.boom, (f"x{i}",), {}) for i in range(n)])
    await eventually(lambda: _has(count_failed(broker), n), timeout=60, what=f"{n} failed entries")
    await w.stop()  # requeued jobs stay queued
    out = naq("failed", url=nats_server.url)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1 + 1000, out.stderr
    assert f"showing the oldest 1000 of {n} failed entries" in out.stderr, out.stderr
    out = naq("failed", "--limit", "2000", url=nats_server.url)
    assert len(out.stdout.splitlines()) == 1 + n and out.stderr == "", out.stderr
    out = naq("failed", "requeue", "--all", url=nats_server.url, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("requeued ") == n
    assert await count_failed(broker) == 0
    assert await Queue(broker).count() == n


async def _has(count, n):
    return await count >= n


def test_output_piped_to_a_reader_that_leaves_is_no_traceback(nats_server):
    # `naq failed | head -1`: BrokenPipeError came out as a traceback (and exit code 1).
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "NAQ_NATS_URL": nats_server.url}
    proc = subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "failed"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


@pytest.mark.parametrize("store", ["temporary", "own"])
def test_naq_server_stops_cleanly_on_sighup(tmp_path, store):
    # A closed terminal's SIGHUP killed `naq server` outright: its temporary store stayed behind
    # (a named store stayed locked by a dead process).
    import re
    import signal
    from pathlib import Path
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    extra = [] if store == "temporary" else ["--store-dir", str(tmp_path / "js")]
    proc = subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "server", "--port", "0", *extra], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"\(store (\S+?)[;)]", line)
        assert m, line
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(15) == 0
        if store == "temporary":
            assert not Path(m.group(1)).exists()
        else:  # the store is free for the next server at once
            again = subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "server", "--port", "0", *extra],
                                     env=env, stdout=subprocess.PIPE, text=True)
            try:
                assert "JetStream at" in again.stdout.readline()
            finally:
                again.terminate()
                again.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_failed_requeue_all_goes_on_past_an_entry_another_requeue_took(broker, nats_server, start_worker,
                                                                             monkeypatch, capsys):
    # Two `requeue --all` at once (or the dashboard's Requeue button meanwhile): the one that found
    # an entry gone stopped there with exit 1, the entries after it left failed.
    from naq_nb.cli import admin_cmds
    from naq_nb.cli.main import main
    from naq_nb.core.failed import list_failed, requeue_failed
    w = await start_worker()
    js = await Queue(broker).configure(max_retries=0).enqueue_many([(jobs.boom, (f"x{i}",), {}) for i in range(3)])
    for j in js:
        await wait_for_result(broker, j.job_id, 15)
    await w.stop()  # requeued jobs stay queued
    seqs = admin_cmds.requeueable_seqs

    async def then_another_requeue_takes_the_first(b, queue):
        found = await seqs(b, queue)
        await requeue_failed(b, found[0])
        return found

    monkeypatch.setattr(admin_cmds, "requeueable_seqs", then_another_requeue_takes_the_first)
    monkeypatch.setenv("NAQ_NATS_URL", nats_server.url)
    code = await asyncio.to_thread(main, ["failed", "requeue", "--all"])
    out, err = capsys.readouterr()
    assert code == 1 and "no failed entry with sequence" in err and "Traceback" not in err, err
    assert out.count("requeued ") == 2, out
    assert await list_failed(broker) == []


@pytest.mark.parametrize("argv", [["jobs", "--id", "some-job"], ["failed", "requeue", "--all"]])
def test_a_server_that_freezes_midway_is_one_line(nats_server, frozen, monkeypatch, capsys, argv):
    # Connected, then the server stops answering (SIGSTOP): nats-py's bare `nats: timeout` came out
    # of every admin command as a traceback.
    import time
    from naq_nb.cli import admin_cmds
    from naq_nb.cli.main import main
    name = "get_status" if argv[0] == "jobs" else "requeueable_seqs"
    real = getattr(admin_cmds, name)

    async def freeze_first(b, *a, **kw):
        await b.kv(b.layout.status_bucket)  # the layout is set up: the freeze comes midway
        frozen()
        return await real(b, *a, **kw)

    monkeypatch.setattr(admin_cmds, name, freeze_first)
    monkeypatch.setenv("NAQ_NATS_URL", nats_server.url)
    started = time.monotonic()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "did not answer while running `naq" in err and "frozen" in err, err
    assert time.monotonic() - started < 40


async def test_a_damaged_status_record_is_named_by_its_job(broker, nats_server):
    # `naq jobs --id X` of a record written by hand said "malformed status record: Expecting value:
    # line 1 column 1 (char 0)", not which record.
    kv = await broker.kv(broker.layout.status_bucket)
    await kv.put("damaged-1", b"\x00not json")
    out = await asyncio.to_thread(naq, "jobs", "--id", "damaged-1", url=nats_server.url)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "job damaged-1: malformed status record" in out.stderr, out.stderr
    out = await asyncio.to_thread(naq, "cancel", "damaged-1", url=nats_server.url)
    assert out.returncode == 1 and "cannot cancel job damaged-1: malformed status record" in out.stderr, out.stderr


@pytest.mark.parametrize("cmd", [["worker", "default"], ["scheduler"], ["jobs"]])
def test_a_status_ttl_shorter_than_the_result_ttl_is_refused_in_one_line(cmd):
    """The CLI reads the settings before connecting: one line naming both variables, exit 2."""
    out = naq(*cmd, url="nats://127.0.0.1:1", env={"NAQ_STATUS_TTL": "3600", "NAQ_RESULT_TTL": "7200"})
    assert out.returncode == 2, out.stderr
    assert "status_ttl (NAQ_STATUS_TTL, 3600) must not be shorter than result_ttl (NAQ_RESULT_TTL, 7200)" in out.stderr
    assert "Traceback" not in out.stderr and "cannot connect" not in out.stderr
