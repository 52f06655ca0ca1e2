"""A lone job's final writes leave within the call (Broker.write_out), not when nats-py's flusher
task next gets the loop: each test blocks the loop right after the call and reads the server's
deliveries on a plain socket, so only what was written within the call can arrive."""

from __future__ import annotations

import socket
import urllib.parse

import pytest

from naq_nb.core.final_writes import send_final_writes
from naq_nb.core.layout import EARLY_MARK
from naq_nb.core.status import status_record


class RawSubscriber:
    """A NATS connection spoken by hand over a blocking socket: usable while the loop is blocked."""

    def __init__(self, url: str, subject: str) -> None:
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=10)
        self.buf = b""
        self._until(b"\r\n")  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"headers":true}\r\nSUB ' + subject.encode() + b" 1\r\nPING\r\n")
        self._until(b"PONG\r\n")
        self.buf = b""

    def _until(self, token: bytes) -> None:
        while token not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the socket")
            self.buf += chunk

    def subjects(self, n: int) -> list[str]:
        """The subjects of the next ``n`` messages (a socket timeout if they do not come)."""
        out: list[str] = []
        while len(out) < n:
            self._until(b"\r\n")
            line, _, rest = self.buf.partition(b"\r\n")
            parts = line.split()
            if parts[0] == b"PING":
                self.sock.sendall(b"PONG\r\n")
                self.buf = rest
                continue
            size = int(parts[-1])
            while len(rest) < size + 2:
                self.sock.settimeout(10)
                rest += self.sock.recv(65536)
            out.append(parts[1].decode())
            self.buf = rest[size + 2 :]
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_sub(settings):
    made: list[RawSubscriber] = []

    def _make(subject: str) -> RawSubscriber:
        made.append(RawSubscriber(settings.nats_url, subject))
        return made[-1]

    yield _make
    for s in made:
        s.close()


async def test_write_out_puts_queued_sends_on_the_wire_within_the_call(broker, raw_sub):
    sub = raw_sub(f"{broker.layout.prefix}.probe.>")
    await broker.send(f"{broker.layout.prefix}.probe.a", b"1")
    await broker.send(f"{broker.layout.prefix}.probe.b", b"2")
    assert broker.nc._pending_data_size  # queued for nats-py's flusher, which can't run below
    assert broker.write_out() is True
    assert broker.nc._pending_data_size == 0
    # The loop is blocked from here: the flusher never runs, yet both arrive, in order.
    assert sub.subjects(2) == [f"{broker.layout.prefix}.probe.a", f"{broker.layout.prefix}.probe.b"]
    assert broker.write_out() is False  # nothing left to write


async def test_a_lone_jobs_final_writes_and_early_push_leave_within_the_call(broker, raw_sub):
    assert await broker.enable_ack_copies()
    token = "c0ffee" + EARLY_MARK  # a client that takes early pushes
    jid = "a" * 32
    sub = raw_sub(broker.layout.reply_inbox(token))
    rec = status_record(jid, "default", "succeeded")
    sent = await send_final_writes(broker, jid, b"result", rec, 10.0, (token, "0001"))
    assert broker.nc._pending_data_size == 0
    # Blocked loop: the early push was written within the call, and the server, which got both
    # writes with it, copies their acknowledgements to the client.
    got = sub.subjects(3)
    assert sorted(broker.layout.reply_parts(s)[1] for s in got) == ["r", "s", "v"]
    assert sent.told
    await sent.status
    await sent.result
