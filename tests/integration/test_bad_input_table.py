"""The table of bad inputs, over the public entry points: API calls raise a ValueError/TypeError
naming the argument at the call (and enqueue nothing); the CLI prints one line and exits with 2.

Cases already covered in tests/test_bad_input.py (unpicklable arguments, bad queue names at
``Queue()``, an unknown serializer, a non-numeric NAQ_ACK_WAIT) are not repeated here.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, Callable

import pytest

import naq_nb as nq
from naq_nb.cli.main import main
from naq_nb.client import compat, scheduling
from naq_nb.client.client import Client
from naq_nb.core.errors import ConfigurationError
from naq_nb.core.job import JobOptions
from naq_nb.core.retry import RetryPolicy
from naq_nb.core.serialization import get_serializer
from naq_nb.core.server import EmbeddedServer
from naq_nb.core.settings import Settings
from naq_nb.core.worker import Worker

import jobs

NAN, INF = math.nan, math.inf

# (case id, call taking ctx (url, client, sid), exception type, regex the message must match)
API: list[tuple[str, Callable[[Any], Any], type, str]] = [
    # job options
    ("delay-nan", lambda c: nq.options(delay=NAN), ValueError, "delay must be seconds >= 0, a finite number"),
    ("delay-inf", lambda c: nq.options(delay=INF), ValueError, "delay must be seconds >= 0, a finite number"),
    ("retry-unknown-key", lambda c: JobOptions.build(retry={"bogus": 1}), ValueError, "retry=.*'bogus'.*RetryPolicy"),
    ("jobs-bad-queue-name", lambda c: nq.jobs(queue="a.b", client=c.client), ValueError, "invalid queue name 'a.b'"),
    ("jobs-queue-not-names", lambda c: nq.jobs(queue=5, client=c.client), TypeError, "queue must be a queue name"),
    ("failed-limit-negative", lambda c: nq.failed(limit=-1, client=c.client), ValueError, "limit must be an int >= 1"),
    ("failed-limit-str", lambda c: nq.failed(limit="x", client=c.client), ValueError, "limit must be an int >= 1"),
    ("local-queues-not-names", lambda c: nq.local(queues=5), TypeError, "queues must be a queue name"),
    ("max_retries-over-the-worker-limit", lambda c: JobOptions.build(max_retries=2_000_000), ValueError,
     "max_retries must be an int in \\[0, 1,000,000\\]"),
    ("retry_delay-list-too-long", lambda c: JobOptions.build(max_retries=1, retry_delay=[1] * 1001), ValueError,
     "at most 1,000"),
    ("retry_delay-too-long", lambda c: JobOptions.build(max_retries=1, retry_delay=1e9), ValueError,
     "retry_delay"),
    ("depends_on-too-many", lambda c: JobOptions.build(depends_on=[f"j{i}" for i in range(1001)]), ValueError,
     "at most 1,000 jobs"),
    ("depends_on-itself", lambda c: JobOptions.build(job_id="selfdep", depends_on=["selfdep"]), ValueError,
     "cannot depend on itself"),
    ("timeout-nan", lambda c: JobOptions.build(timeout=NAN), ValueError, "timeout"),
    ("timeout-inf", lambda c: JobOptions.build(timeout=INF), ValueError, "timeout"),
    ("timeout-bool", lambda c: JobOptions.build(timeout=True), TypeError, "timeout"),
    ("timeout-str", lambda c: JobOptions.build(timeout="5"), TypeError, "timeout"),
    ("result_ttl-nan", lambda c: JobOptions.build(result_ttl=NAN), ValueError, "result_ttl"),
    ("result_ttl-1e-9", lambda c: JobOptions.build(result_ttl=1e-9), ValueError,
     "result_ttl must be at least 1 second"),
    ("NAQ_SIGNING_KEYS=,,,", lambda c: Settings.from_env(environ={"NAQ_SIGNING_KEYS": ",,,"}), ValueError,
     "NAQ_SIGNING_KEYS holds no value between its commas"),
    ("retry_delay-nan", lambda c: JobOptions.build(max_retries=1, retry_delay=NAN), ValueError, "retry_delay"),
    ("retry_delay-list-inf", lambda c: JobOptions.build(max_retries=1, retry_delay=[1, INF]), ValueError,
     "retry_delay"),
    ("retry_delay-bool", lambda c: JobOptions.build(max_retries=1, retry_delay=True), ValueError, "retry_delay"),
    ("retry_delay-list-bool", lambda c: JobOptions.build(max_retries=1, retry_delay=[1, False]), ValueError,
     "retry_delay"),
    ("max_retries-bool", lambda c: JobOptions.build(max_retries=True), ValueError, "max_retries"),
    ("backoff-delay-inf", lambda c: RetryPolicy(1, "exponential", delay=INF), ValueError, "delay"),
    ("backoff-max_delay-nan", lambda c: RetryPolicy(1, "exponential", delay=1, max_delay=NAN), ValueError,
     "max_delay"),
    ("backoff-jitter-nan", lambda c: RetryPolicy(1, jitter=NAN), ValueError, "jitter"),
    ("backoff-list-nan", lambda c: RetryPolicy(1, backoff=(1.0, NAN)), ValueError, "delays"),
    ("queue-newline", lambda c: JobOptions.build(queue="default\n"), ValueError, "queue name"),
    ("queue-space", lambda c: JobOptions.build(queue="a b"), ValueError, "queue name"),
    ("job_id-newline", lambda c: JobOptions.build(job_id="abc\n"), ValueError, "job_id"),
    ("job_id-space", lambda c: JobOptions.build(job_id="a b"), ValueError, "job_id"),
    ("key-leading-space", lambda c: JobOptions.build(key=" k"), ValueError, "key"),
    ("depends_on-newline", lambda c: JobOptions.build(depends_on=["ok", "bad\n"]), ValueError, "depends_on"),
    ("name-not-str", lambda c: JobOptions.build(name=5), TypeError, "name"),
    # enqueue entry points
    ("enqueue_sync-timeout-nan", lambda c: compat.enqueue_sync(jobs.add, 1, 2, timeout=NAN, nats_url=c.url),
     ValueError, "timeout"),
    ("enqueue_sync-queue-newline", lambda c: compat.enqueue_sync(jobs.add, 1, 2, queue_name="q\n",
                                                                 nats_url=c.url), ValueError, "queue name"),
    ("Queue-newline", lambda c: compat.Queue("x\n", client=c.client), ValueError, "queue name"),
    ("Queue.configure-retry_delay-nan", lambda c: compat.Queue(client=c.client).configure(retry_delay=NAN),
     ValueError, "retry_delay"),
    ("nq.options-timeout-inf", lambda c: nq.options(client=c.client, timeout=INF), ValueError, "timeout"),
    ("nq.options-job_id-newline", lambda c: nq.options(client=c.client, job_id="j\n"), ValueError, "job_id"),
    # reads by id
    ("fetch_job_result-id-newline", lambda c: c.client.result_sync("abc\n", timeout=0), ValueError, "job_id"),
    ("fetch_job_result-timeout-nan", lambda c: c.client.result_sync("abc", timeout=NAN), ValueError, "timeout"),
    ("status-id-space", lambda c: c.client.status_sync("a b"), ValueError, "job_id"),
    ("cancel-id-newline", lambda c: c.client.cancel_sync("abc\n"), ValueError, "job_id"),
    # scheduling
    ("enqueue_in-nan", lambda c: scheduling.enqueue_in_sync(NAN, jobs.add, 1, 2, nats_url=c.url), ValueError,
     "delta"),
    ("enqueue_in-inf", lambda c: scheduling.enqueue_in_sync(INF, jobs.add, 1, 2, nats_url=c.url), ValueError,
     "delta"),
    ("enqueue_at-nan", lambda c: scheduling.enqueue_at_sync(NAN, jobs.add, 1, 2, nats_url=c.url), ValueError,
     "dt must be a finite time"),
    ("schedule-interval-nan", lambda c: scheduling.schedule_sync(jobs.add, 1, 2, interval=NAN, nats_url=c.url),
     ValueError, "interval"),
    ("schedule-interval-inf", lambda c: scheduling.schedule_sync(jobs.add, interval=INF, nats_url=c.url),
     ValueError, "interval"),
    ("schedule-interval-bool", lambda c: scheduling.schedule_sync(jobs.add, interval=True, nats_url=c.url),
     TypeError, "interval"),
    ("schedule-misfire_grace-nan", lambda c: scheduling.schedule_sync(jobs.add, interval=5, misfire_grace=NAN,
                                                                      nats_url=c.url), ValueError, "misfire_grace"),
    ("schedule-id-newline", lambda c: scheduling.schedule_sync(jobs.add, interval=5, schedule_id="s\n",
                                                               nats_url=c.url), ValueError, "job_id"),
    ("schedule-interval-tiny", lambda c: scheduling.schedule_sync(jobs.add, interval=1e-9, nats_url=c.url),
     ValueError, "interval must be at least 0.1 seconds"),
    ("schedule-interval-1e300", lambda c: scheduling.schedule_sync(jobs.add, interval=1e300, nats_url=c.url),
     ValueError, "interval must be at least 0.1 seconds, within 9999, not 1e"),
    ("modify-interval-1e12", lambda c: scheduling.modify_scheduled_job_sync(c.sid, interval=1e12, nats_url=c.url),
     ValueError, "within 9999"),
    ("schedule-timezone-int", lambda c: scheduling.schedule_sync(jobs.add, cron="* * * * *", timezone=5,
                                                                 nats_url=c.url), TypeError, "timezone must be"),
    ("modify-interval-tiny", lambda c: scheduling.modify_scheduled_job_sync(c.sid, interval=1e-9, nats_url=c.url),
     ValueError, "interval must be at least 0.1 seconds"),
    ("modify-interval-none", lambda c: scheduling.modify_scheduled_job_sync(c.sid, interval=None, next_run=2e9,
                                                                            nats_url=c.url), ValueError,
     "an interval schedule needs interval"),
    ("modify-cron-and-interval", lambda c: scheduling.modify_scheduled_job_sync(
        c.sid, cron="*/5 * * * *", interval=3, nats_url=c.url), ValueError, "cron or interval, not both"),
    ("modify-next_run-far-past", lambda c: scheduling.modify_scheduled_job_sync(c.sid, next_run=-1e20, nats_url=c.url),
     ValueError, "next_run must be a time from 0001-01-02 to 9999-12-30"),
    ("modify-interval-nan", lambda c: scheduling.modify_scheduled_job_sync(c.sid, interval=NAN, nats_url=c.url),
     ValueError, "interval"),
    ("modify-misfire_grace-nan", lambda c: scheduling.modify_scheduled_job_sync(
        c.sid, misfire_grace=NAN, nats_url=c.url), ValueError, "misfire_grace"),
    ("modify-repeat-bool", lambda c: scheduling.modify_scheduled_job_sync(c.sid, repeat=True, nats_url=c.url),
     ValueError, "repeat"),
    # services
    ("Worker-concurrency-True", lambda c: Worker(concurrency=True, settings=c.settings), ValueError, "concurrency"),
    ("Worker-concurrency-0", lambda c: Worker(concurrency=0, settings=c.settings), ValueError, "concurrency"),
    ("Worker-queue-newline", lambda c: Worker("default\n", settings=c.settings), ValueError, "queue name"),
    ("Worker-grace_period-nan", lambda c: Worker(grace_period=NAN, settings=c.settings), ValueError,
     "grace_period"),
    ("Worker-prefetch-bool", lambda c: Worker(prefetch=True, settings=c.settings), ValueError, "prefetch"),
    ("EmbeddedServer-port-70000", lambda c: EmbeddedServer(port=70000), ValueError, "port"),
    ("EmbeddedServer-user-without-password", lambda c: EmbeddedServer(user="u"), ValueError, "password"),
    ("local-port-70000", lambda c: nq.local(port=70000), ValueError, "port"),
    ("local-workers-bool", lambda c: nq.local(workers=True), ValueError, "workers"),
    # settings and NAQ_* variables
    ("NAQ_HEARTBEAT=0", lambda c: Settings.from_env(environ={"NAQ_HEARTBEAT": "0"}), ValueError, "NAQ_HEARTBEAT"),
    ("NAQ_HEARTBEAT=nan", lambda c: Settings.from_env(environ={"NAQ_HEARTBEAT": "nan"}), ValueError,
     "NAQ_HEARTBEAT"),
    ("NAQ_ACK_WAIT=inf", lambda c: Settings.from_env(environ={"NAQ_ACK_WAIT": "inf"}), ValueError, "NAQ_ACK_WAIT"),
    ("NAQ_PUBLISH_TIMEOUT=nan", lambda c: Settings.from_env(environ={"NAQ_PUBLISH_TIMEOUT": "nan"}), ValueError,
     "NAQ_PUBLISH_TIMEOUT"),
    ("NAQ_PUBLISH_TIMEOUT=0", lambda c: Settings.from_env(environ={"NAQ_PUBLISH_TIMEOUT": "0"}), ValueError,
     "NAQ_PUBLISH_TIMEOUT"),
    ("NAQ_DEFAULT_ACK_WAIT=abc (naq's name)", lambda c: Settings.from_env(environ={"NAQ_DEFAULT_ACK_WAIT": "abc"}),
     ValueError, "NAQ_DEFAULT_ACK_WAIT"),
    ("local-execution", lambda c: nq.local(execution="fork"), ValueError, "execution"),
    ("NAQ_RESULT_TTL=-5", lambda c: Settings.from_env(environ={"NAQ_RESULT_TTL": "-5"}), ValueError,
     "NAQ_RESULT_TTL"),
    ("NAQ_WORKER_TTL=0", lambda c: Settings.from_env(environ={"NAQ_WORKER_TTL": "0"}), ValueError,
     "NAQ_WORKER_TTL"),
    ("NAQ_SCHEDULER_LEASE=nan", lambda c: Settings.from_env(environ={"NAQ_SCHEDULER_LEASE": "nan"}), ValueError,
     "NAQ_SCHEDULER_LEASE"),
    ("NAQ_CONNECT_TIMEOUT=-1", lambda c: Settings.from_env(environ={"NAQ_CONNECT_TIMEOUT": "-1"}), ValueError,
     "NAQ_CONNECT_TIMEOUT"),
    ("NAQ_REPLICAS=0", lambda c: Settings.from_env(environ={"NAQ_REPLICAS": "0"}), ValueError, "NAQ_REPLICAS"),
    ("NAQ_REPLICAS=x", lambda c: Settings.from_env(environ={"NAQ_REPLICAS": "x"}), ValueError, "NAQ_REPLICAS"),
    ("NAQ_PREFIX=a.b", lambda c: Settings.from_env(environ={"NAQ_PREFIX": "a.b"}), ValueError, "NAQ_PREFIX"),
    ("NAQ_DEFAULT_QUEUE=a b", lambda c: Settings.from_env(environ={"NAQ_DEFAULT_QUEUE": "a b"}), ValueError,
     "NAQ_DEFAULT_QUEUE"),
    ("NAQ_TLS_CA-missing", lambda c: Settings.from_env(environ={"NAQ_TLS_CA": "/no/such/ca.pem"}), ValueError,
     "NAQ_TLS_CA"),
    ("NAQ_JSON_ALLOWED-attribute-path", lambda c: get_serializer("json", ("mod:os.system",)), TypeError,
     "NAQ_JSON_ALLOWED"),
    ("Settings-ack_wait-bool", lambda c: Settings().with_(ack_wait=True), TypeError, "ack_wait"),
    # found by the adversarial audit of 2026-12-03
    ("NAQ_NATS_URL=, (no server left: a client would spin)", lambda c: Settings.from_env(
        environ={"NAQ_NATS_URL": ","}), ValueError, "NAQ_NATS_URL"),
    ("nats_url-scheme", lambda c: Settings().with_(nats_url="nats://a:1,foo://x"), ValueError,
     "'foo://x': the scheme must be one of nats://"),
    # found by the fleet audit of 2026-12-04 (it failed later, as "cannot connect" with exit code 1)
    ("NAQ_NATS_URL-with-a-space", lambda c: Settings.from_env(environ={"NAQ_NATS_URL": "garbage url"}), ValueError,
     "'garbage url': not a server address"),
    ("nats_url-port-out-of-range", lambda c: Settings().with_(nats_url="nats://127.0.0.1:99999"), ValueError,
     "the port must be 1-65535"),
    ("nats_url-no-host", lambda c: Settings().with_(nats_url="nats://:4222"), ValueError, "not a server address"),
    # found by the client audit of 2026-12-04: port 0 waited the connect timeout, then said "connection refused"
    ("nats_url-port-0", lambda c: Settings().with_(nats_url="nats://127.0.0.1:0"), ValueError,
     "the port must be 1-65535"),
    ("enqueue_sync-nats_url-port-0", lambda c: nq.enqueue_sync(jobs.add, 1, 2, nats_url="127.0.0.1:0"), ValueError,
     "the port must be 1-65535"),
    ("job-empty-id", lambda c: nq.job("", client=c.client), ValueError, "invalid job_id ''"),
    ("NAQ_STATUS_TTL=0.01", lambda c: Settings.from_env(environ={"NAQ_STATUS_TTL": "0.01"}), ValueError,
     r"NAQ_STATUS_TTL\) must be a number of seconds > 0 \(at least 0.1\)"),
    ("NAQ_RESULT_TTL=1e300", lambda c: Settings.from_env(environ={"NAQ_RESULT_TTL": "1e300"}), ValueError,
     r"NAQ_RESULT_TTL\).*at most 315,360,000 \(10 years\)"),
    ("NAQ_ACK_WAIT=1e300", lambda c: Settings.from_env(environ={"NAQ_ACK_WAIT": "1e300"}), ValueError,
     "NAQ_ACK_WAIT"),
    ("NAQ_HEARTBEAT=45 over NAQ_WORKER_TTL=30", lambda c: Settings.from_env(environ={"NAQ_HEARTBEAT": "45"}),
     ValueError, r"NAQ_HEARTBEAT, 45\) must be below worker_ttl \(NAQ_WORKER_TTL, 30\)"),
    ("NAQ_TLS_CERT-not-a-certificate", lambda c: Settings(tls_cert=jobs.__file__).connect_options(),
     ConfigurationError, "NAQ_TLS_CERT / NAQ_TLS_KEY.*are not a usable certificate and key"),
    ("NAQ_JSON_ALLOWED=,", lambda c: Settings.from_env(environ={"NAQ_JSON_ALLOWED": ","}), ValueError,
     "NAQ_JSON_ALLOWED holds no value between its commas"),
    ("as_completed-timeout-nan", lambda c: list(nq.as_completed([], timeout=NAN)), ValueError,
     r"as_completed\(timeout=...\)"),
    ("NAQ_TLS_CA-not-a-certificate", lambda c: Settings(tls_ca=jobs.__file__).connect_options(),
     ConfigurationError, "NAQ_TLS_CA.*holds no usable CA certificate"),
    ("Worker-concurrency-1e8", lambda c: Worker(concurrency=10**8, settings=c.settings), ValueError,
     r"concurrency must be an int from 1 to 1,000 \(execution='processes'\)"),
    ("Worker-threads-concurrency-1e5", lambda c: Worker(concurrency=10**5, execution="threads",
                                                          settings=c.settings), ValueError, "from 1 to 10,000"),
    ("Worker-prefetch-1e9", lambda c: Worker(prefetch=10**9, settings=c.settings), ValueError, "prefetch"),
    ("Worker-name-space", lambda c: Worker(name="a b*", settings=c.settings), ValueError,
     "a worker name must be 1-64 letters"),
    ("local-workers-1e9", lambda c: nq.local(workers=10**9), ValueError, "workers must be an int from 0 to 1,000"),
    ("cancel_scheduled-wildcard", lambda c: scheduling.cancel_scheduled_job_sync(">", nats_url=c.url), ValueError,
     "invalid schedule_id '>'"),
    ("pause_scheduled-star", lambda c: scheduling.pause_scheduled_job_sync("a.*", client=c.client), ValueError,
     r"invalid schedule_id 'a\.\*'"),
    ("modify_scheduled-None", lambda c: scheduling.modify_scheduled_job_sync(None, interval=5, nats_url=c.url),
     TypeError, "a schedule is named by its id"),
    ("enqueue_many-job_id", lambda c: compat.enqueue_many_sync(jobs.add, [(1, 2), (3, 4)], job_id="fresh1",
                                                                nats_url=c.url), ValueError,
     r"job_id / key name one job; they cannot be used with enqueue_many\(\)"),
    ("enqueue_many-str", lambda c: compat.enqueue_many_sync(jobs.add, "abc", nats_url=c.url), TypeError,
     "calls must be a list of calls"),
    ("enqueue_many-dict", lambda c: compat.enqueue_many_sync(jobs.add, {"a": 1}, nats_url=c.url), TypeError,
     "not dict"),
    ("fetch_job_result-None", lambda c: compat.fetch_job_result_sync(None, nats_url=c.url), TypeError,
     "a job is named by its id"),
    ("get_job_status-123", lambda c: compat.get_job_status_sync(123, nats_url=c.url), TypeError,
     "a job is named by its id"),
    ("cancel_job-None", lambda c: compat.cancel_job_sync(None, nats_url=c.url), TypeError,
     "a job is named by its id"),
    ("Queue-client-5", lambda c: compat.Queue(client=5), TypeError, "needs a naq_nb Client"),
    ("Queue-unknown-option", lambda c: compat.Queue("x", nats_url="nats://127.0.0.1:1", bogus=1), TypeError,
     "unknown NATS connect option 'bogus'"),
    ("Client-option-typo", lambda c: Client(c.url, user_credential="x"), TypeError,
     "did you mean 'user_credentials'"),
    ("Worker-option-typo", lambda c: Worker("default", settings=c.settings, concurrenty=4), TypeError,
     "unknown NATS connect option 'concurrenty'.*did you mean 'concurrency'"),
]


@pytest.fixture
def ctx(settings):
    client = Client(settings.nats_url, settings=settings)
    sid = scheduling.schedule_sync(jobs.add, 1, 2, interval=3600, client=client).job_id
    yield SimpleNamespace(url=settings.nats_url, client=client, settings=settings, sid=sid)
    assert client.queue_size_sync("default") == 0, "a refused call enqueued nothing"
    client.close_sync()
    compat.close_sync_connections()


@pytest.mark.parametrize("case,call,exc,match", API, ids=[row[0] for row in API])
def test_api_bad_input(ctx, case, call, exc, match):
    with pytest.raises(exc, match=match):
        call(ctx)


# (case id, argv, environment, text the one line must contain)
CLI: list[tuple[str, list[str], dict, str]] = [
    ("worker-c-0", ["worker", "-c", "0"], {}, "must be >= 1"),
    ("worker-c-1e8", ["worker", "-c", "100000000"], {}, "concurrency must be an int from 1 to 1,000"),
    ("worker-name-space", ["worker", "--name", "a b"], {}, "a worker name must be"),
    ("jobs-NAQ_NATS_URL=,", ["jobs"], {"NAQ_NATS_URL": ","}, "NAQ_NATS_URL"),
    ("failed-list-with-ids", ["failed", "list", "abc"], {}, "naq failed list takes no job ids"),
    ("failed-requeue-nothing", ["failed", "requeue"], {}, "name job ids or sequences (#N), or --all"),
    # an id named beside --all was requeued, then its entry again, which failed midway (exit 1)
    ("failed-requeue-ids-and-all", ["failed", "requeue", "abc", "--all"], {}, "or --all, not both"),
    ("failed-list-all", ["failed", "list", "--all"], {}, "--all only goes with requeue"),
    ("failed-requeue-limit", ["failed", "requeue", "--all", "--limit", "5"], {}, "--limit only goes with list"),
    ("failed-limit-0", ["failed", "--limit", "0"], {}, "must be >= 1"),
    ("worker-c-x", ["worker", "-c", "x"], {}, "not an integer"),
    ("worker-queue-space", ["worker", "a b"], {}, "invalid queue name"),
    ("worker-grace-inf", ["worker", "--grace-period", "inf"], {}, "finite"),
    ("worker-NAQ_HEARTBEAT=0", ["worker"], {"NAQ_HEARTBEAT": "0"}, "NAQ_HEARTBEAT"),
    ("worker-NAQ_REPLICAS=x", ["worker"], {"NAQ_REPLICAS": "x"}, "NAQ_REPLICAS"),
    ("worker-tls-ca-missing", ["worker", "--tls-ca", "/no/such/ca.pem"], {}, "no such file"),
    ("scheduler-NAQ_SCHEDULER_LEASE=0", ["scheduler"], {"NAQ_SCHEDULER_LEASE": "0"}, "NAQ_SCHEDULER_LEASE"),
    ("server-port-70000", ["server", "--port", "70000"], {}, "port must be 0-65535"),
    ("server-host-unresolvable", ["server", "--host", "not a host"], {},
     "cannot start nats-server on --host 'not a host'"),
    ("server-host-not-ours", ["server", "--host", "192.0.2.1"], {},
     "--host '192.0.2.1': Cannot assign requested address"),
    ("server-store-dir-a-file", ["server", "--store-dir", "/etc/passwd"], {}, "cannot use --store-dir '/etc/passwd'"),
    ("server-port-negative", ["server", "--port", "-1"], {}, "port must be 0-65535"),
    ("server-user-without-password", ["server", "--user", "u"], {}, "password"),
    # --password alone used to be dropped, and the server started open to anyone
    ("server-password-without-user", ["server", "--password", "p"], {}, "--password needs --user"),
    ("dashboard-NAQ_DASHBOARD_PORT=abc", ["dashboard"], {"NAQ_DASHBOARD_PORT": "abc"}, "NAQ_DASHBOARD_PORT"),
    ("dashboard-NAQ_DASHBOARD_PORT=0", ["dashboard"], {"NAQ_DASHBOARD_PORT": "0"}, "NAQ_DASHBOARD_PORT"),
    ("dashboard-port-70000", ["dashboard", "--port", "70000"], {}, "port"),
    ("cancel-id-space", ["cancel", "a b"], {}, "invalid job id"),
    ("jobs-id-newline", ["jobs", "--id", "x\n"], {}, "invalid job id"),
    ("jobs-queue-newline", ["jobs", "default\n"], {}, "invalid queue name"),
    ("purge-NAQ_PREFIX", ["purge"], {"NAQ_PREFIX": "a.b"}, "NAQ_PREFIX"),
    ("failed-queue-space", ["failed", "--queue", "a b"], {}, "invalid queue name"),
    ("job-control-interval-nan", ["job-control", "sid", "reschedule", "--interval", "nan"], {}, "finite"),
    ("job-control-repeat-0", ["job-control", "sid", "reschedule", "--repeat", "0"], {}, "must be >= 1"),
    ("job-control-next-run-bad", ["job-control", "sid", "reschedule", "--next-run", "soon"], {}, "--next-run"),
    ("job-control-next-run-inf", ["job-control", "sid", "reschedule", "--next-run", "inf"], {}, "finite"),
    ("job-control-next-run-1e20", ["job-control", "sid", "reschedule", "--next-run", "1e20"], {},
     "from 0001-01-02 to 9999-12-30"),
    ("job-control-next-run-year-10000", ["job-control", "sid", "reschedule", "--next-run",
                                         "9999-12-31T23:59:59-05:00"], {}, "from 0001-01-02 to 9999-12-30"),
    ("job-control-interval-tiny", ["job-control", "sid", "reschedule", "--interval", "1e-9"], {}, "at least 0.1"),
    ("job-control-pause-with-cron", ["job-control", "sid", "pause", "--cron", "* * * * *"], {},
     "--cron only go with reschedule"),
]


@pytest.mark.parametrize("case,argv,env,text", CLI, ids=[row[0] for row in CLI])
def test_cli_bad_input_one_line_exit_2(capsys, monkeypatch, case, argv, env, text):
    monkeypatch.setenv("NAQ_NATS_URL", "nats://127.0.0.1:1")  # never reached: input is checked first
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert text in err


async def test_list_scheduled_survives_a_stored_nan_time(broker, nats_server, capsys, monkeypatch):
    """A schedule stored with a NaN due time (possible before times were checked) does not crash the listing."""
    import asyncio
    from naq_nb.core.job import Job
    from naq_nb.core.schedules import make_schedule, save_schedule
    s, body = make_schedule(Job("nan-sched", "default", jobs.add, (1, 2)), broker, interval=60)
    s.next_run = NAN
    await save_schedule(broker, s, body)
    monkeypatch.setenv("NAQ_NATS_URL", nats_server.url)
    code = await asyncio.to_thread(main, ["list-scheduled"])
    out = capsys.readouterr().out
    assert code == 0 and "nan-sched" in out and "invalid" in out


def test_a_star_import_reads_no_environment_and_has_the_scheduling_calls():
    # A bad NAQ_* value must raise where it is used, never at import (README): `from naq_nb import *`
    # used to look up DEFAULT_NATS_URL, which reads NAQ_NATS_URL.
    import os
    import subprocess
    import sys
    code = "from naq_nb import *; print(schedule_sync.__name__, enqueue_in.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "NAQ_NATS_URL": ",", "NAQ_HEARTBEAT": "x"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["schedule_sync", "enqueue_in"]
