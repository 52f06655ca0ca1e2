"""``naq worker`` and ``naq server``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ..core.server import EmbeddedServer
from ..core.settings import connection_env
from ..core.stopsignals import stop_signals
from ..core.execution import EXECUTION_MODES
from ..core.worker import Worker
from ..client.services import add_module_paths
from .common import UsageError, add_url, port_number, positive_int, positive_seconds, queue_name, settings_from

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a worker on one or more queues")
    p.add_argument(
        "queues", nargs="*", type=queue_name, help="queues to serve (default: $NAQ_DEFAULT_QUEUE or 'default')"
    )
    p.add_argument(
        "--module-path",
        "-m",
        dest="module_paths",
        action="append",
        default=[],
        metavar="PATH",
        help="put PATH on sys.path so jobs' modules import (repeatable); the current directory always is",
    )
    add_url(p)
    p.add_argument("--concurrency", "-c", type=positive_int, default=10, help="jobs run at once (default 10)")
    p.add_argument("--name", "-n", default=None, help="worker name (default: host name)")
    p.add_argument(
        "--grace-period",
        type=positive_seconds,
        default=30.0,
        help="seconds running jobs get to finish on stop (default 30)",
    )
    p.add_argument(
        "--execution",
        choices=EXECUTION_MODES,
        default="processes",
        help="where sync job code runs: 'processes' (default; child processes, hard timeouts and "
        "cancels, a crashing job can't end the worker) or 'threads' (no hard timeout or cancel)",
    )
    p.add_argument(
        "--no-echo",
        dest="echo",
        action="store_false",
        help="don't copy what jobs print to this process's output (it stays in each job's record)",
    )
    p.set_defaults(func=_worker)

    s = sub.add_parser("server", help="run an embedded nats-server with JetStream in the foreground")
    s.add_argument("--port", "-p", type=port_number, default=4222, help="port (default 4222; 0 = a free one)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--store-dir", "-sd", default=None, help="JetStream store directory (default: temporary)")
    s.add_argument("--max-payload", type=positive_int, default=None, help="max message size in bytes")
    s.add_argument("--user", default=None, help="require this user (with --password; or $NAQ_SERVER_PASSWORD)")
    s.add_argument(
        "--password",
        default=None,
        help="password of --user (prefer $NAQ_SERVER_PASSWORD: command lines are visible to other local users)",
    )
    s.add_argument("--token", default=None, help="require this token (or $NAQ_SERVER_TOKEN)")
    s.add_argument("--tls-cert", default=None, help="serve TLS with this certificate (with --tls-key)")
    s.add_argument("--tls-key", default=None, help="private key of --tls-cert")
    s.set_defaults(func=_server)


def _worker(args: argparse.Namespace) -> int:
    # As in naq: a worker started where tasks.py lives can import it (a console script's
    # sys.path[0] is its bin directory, not the working directory).
    add_module_paths([os.getcwd(), *(os.path.abspath(p) for p in reversed(args.module_paths))])
    settings = settings_from(args)
    # Job code's own calls without a URL (an async or thread-mode job's enqueue) reach this worker's server.
    os.environ.update(connection_env(settings))
    try:
        w = Worker(
            args.queues or None,
            settings=settings,
            concurrency=args.concurrency,
            name=args.name,
            grace_period=args.grace_period,
            execution=args.execution,
            echo_output=args.echo,
        )
    except ValueError as exc:  # -c over the limit, a --name that can't be a key: one line, exit 2
        raise UsageError(str(exc)) from None

    async def _run() -> None:
        w.install_signal_handlers()
        await w.run()
        left = w.execution.threads.tasks_left if w.execution is not None else 0
        if left:
            # Async jobs that caught their cancel run on; asyncio.run would cancel them again and
            # wait for ever. Their jobs are recorded failed or cancelled already.
            logging.getLogger("naq_nb.worker").warning("leaving %d async job(s) behind, still running", left)
            _leave_now()

    asyncio.run(_run())
    if w.execution is not None and w.execution.active:
        # Sync jobs past the grace period cannot be interrupted; their messages were
        # handed back, so leave without waiting for their threads.
        logging.getLogger("naq_nb.worker").warning("leaving %d sync job thread(s) behind", w.execution.active)
        _leave_now()
    left_by_jobs = _threads_left_by_jobs(w)
    if left_by_jobs:
        # A non-daemon thread a job started (threads mode, or an async job) would hold the
        # interpreter's exit for as long as it runs: the worker has stopped, so leave without it.
        names = ", ".join(t.name for t in left_by_jobs[:5])
        logging.getLogger("naq_nb.worker").warning(
            "leaving %d thread(s) a job started, still running (%s)", len(left_by_jobs), names
        )
        _leave_now()
    return 0


def _threads_left_by_jobs(w: Worker) -> list[threading.Thread]:
    """Non-daemon threads still alive after the worker stopped, other than its idle job threads
    (a thread pool's, which end at exit)."""
    pool = w.execution.threads.own_threads() if w.execution is not None else frozenset()
    main = threading.main_thread()
    return [t for t in threading.enumerate() if t is not main and not t.daemon and t not in pool and t.is_alive()]


def _leave_now() -> None:
    """Exit 0 at once: the worker has stopped, closed its connection and handed back its messages;
    what is left is job code that cannot be interrupted and must not hold the process."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _server(args: argparse.Namespace) -> int:
    if args.password and not args.user:  # never start an open server when a password was asked for
        raise UsageError("--password needs --user (the user name clients log in with)")
    password = args.password or os.environ.get("NAQ_SERVER_PASSWORD") or None
    token = args.token or os.environ.get("NAQ_SERVER_TOKEN") or None
    try:
        srv = EmbeddedServer(
            port=args.port or None,
            host=args.host,
            store_dir=args.store_dir,
            max_payload=args.max_payload,
            user=args.user,
            password=password if args.user else None,
            token=token,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # Handlers first: whoever reads the URL line may send SIGTERM at once, and must get a clean stop.
    # The handler only appends to a list: a threading.Event's set() takes the lock its wait() holds
    # around each wake-up, and a signal landing there hung `naq server` on its own lock for good.
    asked: list[int] = []
    for sig in stop_signals():
        signal.signal(sig, lambda signum, _frame: asked.append(signum))
    lock = _store_lock(args.store_dir)
    try:
        srv.start()
    except OSError as exc:  # a host that does not resolve or is not this machine's, a store that can't be made
        why = exc.strerror or str(exc)
        if exc.filename:
            raise UsageError(f"cannot use --store-dir {args.store_dir!r}: {why}: {exc.filename!r}") from None
        raise UsageError(f"cannot start nats-server on --host {args.host!r}: {why}") from None
    finally:
        if lock is not None and not srv.running:
            lock.release()
    if lock is not None:
        lock.record(srv.proc.pid if srv.proc else None)
    auth = "; token required" if token else "; user/password required" if args.user else ""
    print(
        f"nats-server {srv.info.get('version', '?')} with JetStream at "
        f"{srv.url.replace('nats://', 'tls://') if args.tls_cert else srv.url} (store {srv.store_dir}{auth})",
        flush=True,
    )
    try:
        while not asked:
            time.sleep(0.1)  # (a signal interrupts the sleep; its handler runs, and the loop ends)
            if not srv.running:
                code = srv.proc.returncode if srv.proc else None
                how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                print(f"nats-server exited ({how}): {srv.log_tail()}", flush=True)
                return 1
        return 0
    finally:
        srv.stop()  # a temporary store goes with it, however the server ended
        if lock is not None:
            lock.release()


def _store_lock(store_dir: str | None) -> Any:
    """One server per store: two nats-servers on one store each answer from their own copy of it
    (nq.local() takes the same lock). None for a temporary store."""
    if store_dir is None:
        return None
    from ..notebook.local_store import StoreBusyError, StoreLock  # (the CLI sits above the notebook layer)

    lock = StoreLock(Path(store_dir).expanduser().resolve())
    try:
        lock.acquire()
    except StoreBusyError as exc:
        raise UsageError(f"--store-dir: {exc}; one server per store") from None
    except OSError as exc:
        raise UsageError(f"cannot use --store-dir {store_dir!r}: {exc.strerror or exc}") from None
    return lock
