"""Security: signing that holds (jobs and results), the JSON allow-list, secrets kept out of sight."""

from __future__ import annotations

import asyncio
import json
import pickle

import pytest

from naq_nb.core.broker import Broker
from naq_nb.core.envelope import HEADER_META, HEADER_MSG_ID
from naq_nb.core.errors import JobNotFoundError, SignatureError
from naq_nb.core.queue import Queue
from naq_nb.core.records import encode_failure
from naq_nb.core.results import wait_for_result
from naq_nb.core.serialization import get_serializer, pack_record, seal_record
from naq_nb.core.settings import Settings

import sec_jobs
from helpers import failed_entries, wire_message

KEY = b"k-2026-new"


# --- signing of job messages ----------------------------------------------------------------

async def test_replayed_message_with_new_ids_or_options_runs_zero_times(settings, start_worker, tmp_path):
    signed = settings.with_(signing_key=KEY)
    b = await Broker.connect(settings=signed)
    marker = tmp_path / "runs.txt"
    try:
        headers, body = await wire_message(b, "default", lambda: Queue(b).enqueue(sec_jobs.append_line, str(marker)))
        await start_worker(settings=signed)
        await wait_for_result(b, json.loads(headers[HEADER_META])["id"], 30)
        assert marker.read_text().count("ran") == 1
        replays = []
        for i in range(5):  # new id, new id + new options, new queue, or the signature of another job
            meta = json.loads(headers[HEADER_META])
            meta["id"] = f"replay{i}"
            if i == 1:
                meta["timeout"] = 999
            if i == 2:
                meta["retry"] = {"max_retries": 50}
            h = {**headers, HEADER_MSG_ID: f"replay{i}", HEADER_META: json.dumps(meta, separators=(",", ":"))}
            replays.append(h)
            await b.js.publish(b.layout.queue_subject("default"), body, headers=h)
        # the exact message again, past de-duplication with a fresh Nats-Msg-Id: its job has a result
        await b.js.publish(b.layout.queue_subject("default"), body, headers={**headers, HEADER_MSG_ID: "again"})
        await failed_entries(b, "bad signature", 5)
        for _ in range(600):
            if await Queue(b).count() == 0:
                break
            await asyncio.sleep(0.05)
        assert await Queue(b).count() == 0
        assert marker.read_text().count("ran") == 1, "no replayed message ran"
        with pytest.raises(JobNotFoundError):  # unverified: nothing is written under the id it names
            await wait_for_result(b, "replay1", 0)
    finally:
        await b.close()


async def test_unsigned_and_wrongly_signed_jobs_are_dead_lettered_once(settings, broker, start_worker, tmp_path):
    marker = tmp_path / "runs.txt"
    await start_worker(settings=settings.with_(signing_key=KEY))
    unsigned = await Queue(broker).enqueue(sec_jobs.append_line, str(marker))
    wrong = await Broker.connect(settings=settings.with_(signing_key=b"attacker"))
    try:
        forged = await Queue(wrong).enqueue(sec_jobs.append_line, str(marker))
    finally:
        await wrong.close()
    rows = await failed_entries(broker, "bad signature", 2)
    assert {r["job_id"] for r in rows} == {unsigned.job_id, forged.job_id}
    assert all(r["attempts"] == 1 for r in rows), "dead-lettered on the first delivery, no retry loop"
    assert not marker.exists()


async def test_key_rotation_signs_with_first_accepts_all(settings, start_worker):
    env = {"NAQ_SIGNING_KEYS": "new,old"}
    rotated = Settings.from_env(environ=env, nats_url=settings.nats_url, prefix=settings.prefix, ack_wait=5.0,
                                heartbeat_interval=1.0)
    assert rotated.signing_key == b"new" and rotated.signing_keys == (b"new", b"old")
    await start_worker(settings=rotated)
    old_producer = settings.with_(signing_key=b"old", accepted_keys=(b"new",))  # not yet switched
    b = await Broker.connect(settings=old_producer)
    try:
        job = await Queue(b).enqueue(sec_jobs.append_line, "/dev/null", "x")
        assert (await wait_for_result(b, job.job_id, 30)).unwrap() == "x"  # result sealed with "new"
    finally:
        await b.close()


async def test_scheduled_jobs_are_signed_per_firing_and_forged_schedules_never_fire(settings, start_worker, tmp_path):
    from naq_nb.core.job import Job, JobOptions
    from naq_nb.core.scheduler import Scheduler
    from naq_nb.core.schedules import make_schedule, save_schedule
    signed = settings.with_(signing_key=KEY)
    marker = tmp_path / "runs.txt"
    b = await Broker.connect(settings=signed)
    try:
        await b.ensure_layout()
        job = Job("sched-ok", "default", sec_jobs.append_line, (str(marker),), {}, JobOptions())
        s, body = make_schedule(job, b, when=0.0)
        await save_schedule(b, s, body)
        forged_job = Job("sched-forged", "default", sec_jobs.append_line, (str(marker), "forged"), {}, JobOptions())
        fs, fbody = make_schedule(forged_job, b, when=0.0)
        fs.sig = None  # as if written straight into the bucket by someone without the key
        await save_schedule(b, fs, fbody)
        await start_worker(settings=signed)
        sched = Scheduler(settings=signed, ha=False)
        task = asyncio.ensure_future(sched.run())
        try:
            assert (await wait_for_result(b, "sched-ok", 30)).unwrap() == "ran"
        finally:
            sched.request_stop()
            await asyncio.wait_for(task, 15)
        assert marker.read_text().splitlines() == ["ran"], "the forged schedule never ran"
    finally:
        await b.close()


# --- signing of result records ------------------------------------------------------------

def _evil_record(path, *, status: str) -> bytes:
    payload = pickle.dumps(sec_jobs.Evil(path))
    if status == "succeeded":
        return pack_record({"status": "succeeded", "ser": "pickle"}, payload)
    return pack_record({"status": "failed", "ser": "pickle", "error": "x", "exc_type": "ValueError"}, payload)


@pytest.mark.parametrize("status", ["succeeded", "failed"])
async def test_forged_result_record_never_executes_in_the_client(settings, broker, tmp_path, status):
    """Control: without a key the payload does run (so the test can fail); with one it never does."""
    victim = await Queue(broker).enqueue(sec_jobs.append_line, "/dev/null")  # no worker: stays queued
    kv = await broker.kv(broker.layout.results_bucket)
    control = tmp_path / "control"
    await kv.put(victim.job_id, _evil_record(control, status=status))
    rec = await wait_for_result(broker, victim.job_id, 5)
    try:
        rec.unwrap()
    except Exception:
        pass
    assert control.exists(), "control: an unsigned client unpickles the forged payload"

    marker = tmp_path / "pwned"
    keyed = await Broker.connect(settings=broker.settings.with_(signing_key=KEY))
    try:
        for forged in (_evil_record(marker, status=status),                               # unsigned
                       seal_record(_evil_record(marker, status=status), victim.job_id, b"other"),  # wrong key
                       seal_record(_evil_record(marker, status=status), "another-job", KEY)):      # other job's seal
            await kv.put(victim.job_id, forged)
            rec = await wait_for_result(keyed, victim.job_id, 5)
            assert rec.status == "failed"
            with pytest.raises(SignatureError, match="bad signature"):
                rec.unwrap()
            assert isinstance(rec.exception(), SignatureError)
        assert not marker.exists()
        good = seal_record(encode_failure(get_serializer("pickle"), ValueError("real")), victim.job_id, KEY)
        await kv.put(victim.job_id, good)
        with pytest.raises(ValueError, match="real"):
            (await wait_for_result(keyed, victim.job_id, 5)).unwrap()
    finally:
        await keyed.close()


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_forged_result_fails_the_future_without_executing(settings, tmp_path, status):
    from naq_nb.client.client import Client
    from naq_nb.client.future import JobFuture
    from naq_nb.client.loop import run_sync
    marker = tmp_path / "pwned"
    client = Client(settings.nats_url, settings=settings.with_(signing_key=KEY))
    try:
        fut = JobFuture.attach("victim-job", client)

        async def forge() -> None:
            b = await client.broker()
            await (await b.kv(b.layout.results_bucket)).put("victim-job", _evil_record(marker, status=status))
        run_sync(forge())
        with pytest.raises(SignatureError, match="bad signature"):
            fut.result(timeout=30)
        assert not marker.exists()
    finally:
        client.close_sync()


# --- JSON mode --------------------------------------------------------------------------------

async def test_json_worker_refuses_os_system(settings, start_worker, tmp_path):
    json_settings = settings.with_(serializer="json")
    marker = tmp_path / "pwned"
    await start_worker(settings=json_settings)
    b = await Broker.connect(settings=json_settings)
    try:
        job = await Queue(b).enqueue("os:system", f"touch {marker}")
        rec = await wait_for_result(b, job.job_id, 30)
        assert rec.status == "failed" and "not allowed" in rec.meta["error"]
        ok = await Queue(b).enqueue(sec_jobs.touch, str(tmp_path / "ok"))
        assert (await wait_for_result(b, ok.job_id, 30)).unwrap() == str(tmp_path / "ok")
        assert not marker.exists()
    finally:
        await b.close()


# --- secrets out of sight -----------------------------------------------------------------------

SECRET = "hunter2-very-secret"


async def test_reprs_and_errors_hold_no_credentials(tmp_path):
    from naq_nb.client.client import Client
    from naq_nb.client.compat import Queue as NaqQueue
    from naq_nb.core.errors import NaqConnectionError
    from naq_nb.core.server import EmbeddedServer
    srv = EmbeddedServer(store_dir=tmp_path / "js", user="alice", password=SECRET).start()
    try:
        url = f"nats://alice:{SECRET}@127.0.0.1:{srv.port}"
        s = Settings.from_env(environ={}, nats_url=url, signing_key=SECRET.encode())
        b = await Broker.connect(settings=s)
        try:
            client = Client(url, settings=s)
            texts = [repr(b), repr(client), repr(NaqQueue("default", client=client)), repr(srv), repr(s)]
            assert all(SECRET not in t for t in texts), texts
        finally:
            await b.close()
        with pytest.raises(NaqConnectionError) as info:
            await Broker.connect(settings=s.with_(nats_url=f"nats://alice:wrong-{SECRET}@127.0.0.1:{srv.port}"))
        assert SECRET not in str(info.value) and "authorization violation" in str(info.value)
        conf = srv.store_dir / "naq-nats.conf"
        assert conf.stat().st_mode & 0o077 == 0, "the server config holds the password: owner only"
    finally:
        srv.stop()


def test_dashboard_notebook_holds_no_password(tmp_path):
    pytest.importorskip("nbformat")
    from naq_nb.cli.dashboard_cmds import voila_env, write_dashboard_notebook
    s = Settings.from_env(environ={}, nats_url=f"nats://alice:{SECRET}@127.0.0.1:4222")
    path = write_dashboard_notebook(tmp_path, s.nats_url)
    assert SECRET not in path.read_text() and "127.0.0.1" not in path.read_text()
    assert path.stat().st_mode & 0o077 == 0
    assert voila_env(s)["NAQ_NATS_URL"] == s.nats_url  # the kernel gets it through its environment


# --- authentication: nq.local(), naq server, the CLI -------------------------------------------

def test_local_cluster_requires_its_generated_credentials():
    import naq_nb as nq
    from naq_nb.client.loop import run_sync
    from naq_nb.core.errors import NaqConnectionError
    cluster = nq.local(workers=1, scheduler=False)
    try:
        assert cluster.server.requires_auth and cluster.connect_options()
        assert nq.submit(sec_jobs.append_line, "/dev/null", "ok").result(timeout=30) == "ok"
        stranger = Settings.from_env(environ={}, nats_url=cluster.url, connect_timeout=2.0)
        with pytest.raises(NaqConnectionError, match="authorization violation"):
            run_sync(Broker.connect(settings=stranger))
        friend = run_sync(Broker.connect(settings=stranger, **cluster.connect_options()))
        run_sync(friend.close())
        assert cluster.connect_options()["password"] not in repr(cluster) + cluster._repr_html_()
        conf = cluster.server.store_dir / "naq-nats.conf"
        assert conf.stat().st_mode & 0o077 == 0
    finally:
        cluster.stop()


def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from naq_nb.cli.main import main
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("auth", ["user", "token"])
def test_cli_reports_authorization_violation_and_takes_credentials_in_the_url(tmp_path, capsys, monkeypatch, auth):
    from naq_nb.core.server import EmbeddedServer
    monkeypatch.setenv("NAQ_CONNECT_TIMEOUT", "3")
    kw = {"user": "alice", "password": SECRET} if auth == "user" else {"token": SECRET}
    srv = EmbeddedServer(store_dir=tmp_path / "js", **kw).start()
    try:
        code, _, err = _run_cli(capsys, "jobs", "-u", srv.url)
        assert code == 1 and "authorization violation: check user/password/token" in err
        assert "is a nats-server running" not in err
        code, out, err = _run_cli(capsys, "jobs", "-u", srv.url_with_credentials())
        assert code == 0 and "default" in out, err
        assert SECRET not in out + err
    finally:
        srv.stop()


def _make_certs(d) -> tuple[str, str, str]:
    import shutil
    import subprocess
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make test certificates")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=naq-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # Python 3.13 verifies strictly: a CA says so
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return str(d / "ca.pem"), str(d / "server.pem"), str(d / "server.key")


def test_cli_reports_untrusted_certificate_and_takes_tls_ca(tmp_path, capsys, monkeypatch):
    from naq_nb.core.server import EmbeddedServer
    ca, cert, key = _make_certs(tmp_path)
    monkeypatch.setenv("NAQ_CONNECT_TIMEOUT", "3")
    srv = EmbeddedServer(store_dir=tmp_path / "js", tls_cert=cert, tls_key=key).start()
    try:
        url = f"tls://127.0.0.1:{srv.port}"
        code, _, err = _run_cli(capsys, "jobs", "-u", url)
        assert code == 1 and "TLS certificate verify failed" in err and "is a nats-server running" not in err
        code, out, err = _run_cli(capsys, "jobs", "-u", url, "--tls-ca", ca)
        assert code == 0 and "default" in out, err
    finally:
        srv.stop()


def test_naq_server_can_require_a_token(tmp_path):
    import os
    import re
    import signal
    import subprocess
    import sys
    from pathlib import Path
    from naq_nb.client.loop import run_sync
    from naq_nb.core.errors import NaqConnectionError
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "NAQ_SERVER_TOKEN": SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "naq_nb.cli.main", "server", "--port", "0", "--store-dir",
                             str(tmp_path / "js")], env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"nats://127\.0\.0\.1:(\d+)", line)
        assert m and SECRET not in line, line
        url = f"nats://127.0.0.1:{m.group(1)}"
        s = Settings.from_env(environ={}, nats_url=url, connect_timeout=3.0)
        with pytest.raises(NaqConnectionError, match="authorization violation"):
            run_sync(Broker.connect(settings=s))
        b = run_sync(Broker.connect(settings=s.with_(nats_url=f"nats://{SECRET}@127.0.0.1:{m.group(1)}")))
        run_sync(b.close())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_json_mode_client_never_unpickles_a_result(tmp_path):
    from naq_nb.core.records import ResultRecord
    marker = tmp_path / "pwned"
    for status in ("succeeded", "failed"):
        rec = ResultRecord.decode(_evil_record(marker, status=status), "j1", accept_pickle=False)
        assert rec.status == "failed"
        with pytest.raises(Exception) as info:
            rec.unwrap()
        assert not isinstance(info.value, OSError)
    assert not marker.exists()
