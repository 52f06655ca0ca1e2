"""Fixtures: real nats-server processes (started through naq_nb's own EmbeddedServer), workers.

One nats-server serves the whole session (``shared_nats_server``); each test that asks for
``nats_server`` (directly or through ``settings``, ``broker``, ``start_worker``, ``nb_client`` ...)
gets its own ``NAQ_PREFIX`` (the ``naq_prefix`` fixture, also set in the environment so
``nq.connect()``, ``Settings.from_env()`` and child processes pick it up), and at its end every
stream, KV bucket and object store on the shared server is deleted.

A test that kills, restarts or configures its server asks for ``own_nats_server``: then
``nats_server`` (and so ``settings``, ``broker`` ...) is that private server for this test.
``nats_server`` is the shared one otherwise, and refuses ``kill``/``restart``/``stop``.

Under pytest-xdist (``make test``) each worker process is a session of its own: its own shared
server on its own free port and store directory, its own prefix counter.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from naq_nb.core.broker import Broker
from naq_nb.core.server import EmbeddedServer, start_cluster
from naq_nb.core.settings import Settings
from naq_nb.core.worker import Worker

# Re-exported for tests that still import them from here; new code imports them from helpers.
from helpers import ROOT, Services, all_threads_stopped, eventually, wait_until, worker_process  # noqa: F401


UNIT = Path(__file__).resolve().parent / "unit"


def _in_unit_tier(request) -> bool:
    return Path(str(request.node.path)).resolve().is_relative_to(UNIT)


@pytest.fixture(autouse=True)
def _unit_tier_has_no_server(request, monkeypatch):
    """tests/unit stays server-free: starting a nats-server or connecting to one fails the test."""
    if not _in_unit_tier(request):
        return

    def refuse(*args, **kwargs):
        raise AssertionError("a test in tests/unit started or connected to a nats-server: "
                             "move it to tests/integration")

    import nats
    monkeypatch.setattr(EmbeddedServer, "start", refuse)
    monkeypatch.setattr(nats, "connect", refuse)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the warnings its nats-server logged (a CI run keeps no store dir)."""
    outcome = yield
    rep = outcome.get_result()
    srv = item.funcargs.get("nats_server") if rep.failed else None
    if srv is not None:
        lines = [line for line in srv.log_tail(400).split(" | ") if " [WRN] " in line or " [ERR] " in line]
        if lines:
            rep.sections.append(("nats-server warnings", "\n".join(lines[-15:])))


@pytest.fixture(autouse=True)
def _naq_local_dir(tmp_path_factory, monkeypatch):
    # nq.local()'s default store is per user and folder, kept across runs: each test gets its own.
    monkeypatch.setenv("NAQ_LOCAL_DIR", str(tmp_path_factory.mktemp("naq-local")))


@pytest.fixture(autouse=True)
def _no_stopped_session_left():
    yield
    shared = sys.modules.get("naq_nb.client.shared")
    if shared is not None and shared.session_default() is None:
        shared.set_session_default(None)  # a stopped nq.local() refuses URL-less calls: in its own test only


_prefixes = itertools.count(1)


@pytest.fixture(scope="session")
def shared_nats_server(tmp_path_factory):
    """The session's nats-server (``NAQ_NATS_SERVER_BIN`` chooses the binary, as for every EmbeddedServer)."""
    srv = EmbeddedServer(store_dir=tmp_path_factory.mktemp("shared-js"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def own_nats_server(tmp_path):
    """A nats-server for this test alone (it may kill or restart it); ``nats_server`` is then this one."""
    srv = EmbeddedServer(store_dir=tmp_path / "js")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def naq_prefix() -> str:
    """This test's ``NAQ_PREFIX``: letters and digits only, so no prefix is the start of another's names."""
    return f"t{next(_prefixes)}x"


class SharedServer:
    """The shared server as a test sees it: ``url``, ``port``, ``running`` ...; no kill, restart or stop."""

    def __init__(self, srv: EmbeddedServer) -> None:
        self._srv = srv

    def __getattr__(self, name: str):
        if name in ("kill", "restart", "stop", "start"):
            raise AttributeError(f"nats_server.{name}(): the session's shared server cannot be "
                                 "stopped; ask for the own_nats_server fixture")
        return getattr(self._srv, name)


def delete_all_streams(url: str) -> None:
    """Delete every stream (so every KV bucket and object store) on the server at ``url``."""
    import nats

    async def _wipe() -> None:
        nc = await nats.connect(url, connect_timeout=10, max_reconnect_attempts=0)
        try:
            js = nc.jetstream(timeout=10)
            for _ in range(20):  # a page holds up to 256 streams
                infos = await js.streams_info()
                if not infos:
                    return
                for info in infos:
                    await js.delete_stream(info.config.name)
            raise AssertionError(f"streams keep coming back on {url}")
        finally:
            await nc.close()

    # Teardown may run where an event loop is current: wipe on a thread of its own.
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _run_collecting(_wipe, errors), name="naq-test-wipe")
    t.start()
    t.join(60)
    if errors:
        raise errors[0]


def _run_collecting(coro_fn, errors: list) -> None:
    try:
        asyncio.run(coro_fn())
    except BaseException as exc:  # handed to the test's teardown, which reports it
        errors.append(exc)


@pytest.fixture
def nats_server(request, naq_prefix, monkeypatch):
    """The server this test talks to: its ``own_nats_server`` if it asked for one, else the shared one.

    On the shared server the test's names carry ``naq_prefix``; all streams are deleted at its end
    (its own and any a test made under another prefix), so the server stays small.
    """
    if _in_unit_tier(request):
        pytest.fail("tests/unit uses no server: move this test to tests/integration")
    monkeypatch.setenv("NAQ_PREFIX", naq_prefix)
    if "own_nats_server" in request.fixturenames:
        yield request.getfixturevalue("own_nats_server")
        return
    shared = request.getfixturevalue("shared_nats_server")
    yield SharedServer(shared)
    _forget_shared_clients()
    delete_all_streams(shared.url)


def _forget_shared_clients() -> None:
    """Close the clients naq_nb keeps per URL: the next test has the same URL but another prefix."""
    client_mod = sys.modules.get("naq_nb.client.shared")
    if client_mod is None:
        return
    client_mod.set_session_default(None)
    if client_mod._clients:
        client_mod.close_all_clients()


@pytest.fixture
def settings(nats_server, naq_prefix) -> Settings:
    return Settings.from_env(environ={}, nats_url=nats_server.url, prefix=naq_prefix, ack_wait=5.0,
                             heartbeat_interval=1.0)


@pytest.fixture
async def broker(settings):
    b = await Broker.connect(settings=settings)
    await b.ensure_layout()
    yield b
    await b.close()


@pytest.fixture
async def start_worker(settings):
    """``w = await start_worker(queues, concurrency=...)``: a worker on the test's loop."""
    services = Services()

    async def _start(queues="default", **kw) -> Worker:
        return await services.start(Worker(queues, settings=kw.pop("settings", settings), **kw))

    yield _start
    await services.stop_all(graceful=False)


@pytest.fixture
def no_cluster_left():
    """Stops whatever ``nq.local()`` cluster a test left running."""
    yield
    from naq_nb.notebook import local as local_mod
    c = local_mod._current
    if c is not None:
        c.stop()


@pytest.fixture
def nb_client(nats_server, settings):
    """A client on the test's server, set as the session's default (``nq.submit`` uses it)."""
    from naq_nb.client.client import Client  # imported here: some tests check what importing naq_nb loads
    from naq_nb.client.session import set_default_client
    c = Client(nats_server.url, settings=settings)
    set_default_client(c)
    yield c
    set_default_client(None)
    c.close_sync()


@pytest.fixture
def thread_worker(settings):
    """``thread_worker(queues="default", concurrency=4)``: a Worker on its own loop in a thread."""
    from naq_nb.notebook.local import ServiceThread
    threads: list[ServiceThread] = []

    def _start(queues="default", concurrency: int = 4, **kw) -> Worker:
        w = Worker(queues, settings=settings, concurrency=concurrency, grace_period=2.0, **kw)
        threads.append(ServiceThread(w, "naq-test-worker").start(30.0))
        return w

    yield _start
    for t in threads:
        t.stop(5.0)


@pytest.fixture
def frozen(own_nats_server, nats_server):
    """``freeze()`` SIGSTOPs the server: connections stay up, nothing is acknowledged."""
    pid = nats_server.proc.pid
    stopped = []

    def freeze() -> None:
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)
        # The signal takes effect asynchronously: wait until every thread is stopped.
        deadline = time.monotonic() + 10
        while not all_threads_stopped(pid):
            assert time.monotonic() < deadline, "nats-server did not stop"
            time.sleep(0.005)
    yield freeze
    if stopped:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def quick_client(settings):
    """A client whose publishes fail after 1 s without an acknowledgement (tests that freeze or
    kill the server); failures it was left with at the end are each test's own to check."""
    from naq_nb.client.client import Client
    from naq_nb.core.errors import JobNotStoredError
    c = Client(settings=settings.with_(publish_timeout=1.0))
    yield c
    try:
        c.close_sync()
    except JobNotStoredError:
        pass


@pytest.fixture
def three_nodes(tmp_path):
    """Three clustered JetStream servers (mark the test ``xdist_group("cluster")``); a SIGSTOPped one is woken."""
    nodes = start_cluster(tmp_path, name="tests")
    yield nodes
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            os.kill(node.proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        node.stop()
