"""``nq.local()``'s worker processes: the ``naq worker`` command line, the wait for their first
heartbeat, and restarting the ones that died (killed, out of memory) when the cell is re-run."""

from __future__ import annotations

import json
import signal
import sys
import time

from ..client.client import Client
from ..client.shared import say_loudly
from ..core.errors import NaqException
from ..core.keeper import KeptProcess

__all__ = ["worker_argv", "wait_for_workers", "restart_dead", "how_it_ended"]


def worker_argv(queues: list[str], execution: str, workers: int, i: int) -> list[str]:
    """The ``naq worker`` command of process ``i``."""
    # Job processes give the concurrency: one worker loop serves them all, the way a
    # terminal's `naq worker -c N` does. Thread execution needs a process per slot to use cores.
    shared = execution == "processes"
    return [
        sys.executable,
        "-m",
        "naq_nb.cli.main",
        "worker",
        *queues,
        "-c",
        str(workers if shared else 1),
        "--name",
        "local" if shared else f"local-{i}",
        "--grace-period",
        "5",
        "--execution",
        execution,
        "--no-echo",  # what jobs print stays in their records, not in an ever-growing log file
    ]


async def wait_for_workers(client: Client, procs: list[KeptProcess], pids: set[int], timeout: float) -> None:
    """Wait (pushed by a watch on the workers bucket) until every process in ``pids`` has sent a heartbeat."""
    import nats.errors

    b = await client.broker()
    watcher = await (await b.kv(b.layout.workers_bucket)).watchall()
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while seen < pids:
            dead = [p for p in procs if not p.alive]
            if dead:
                raise NaqException(
                    f"local worker process exited at start (code {dead[0].returncode}):\n"
                    + "\n".join(dead[0].log_tail(8))
                )
            if time.monotonic() > deadline:
                raise NaqException(f"local worker processes did not start within {timeout:g}s")
            try:
                entry = await watcher.updates(timeout=0.5)
            except nats.errors.TimeoutError:
                continue  # look at the processes again
            if entry is not None and entry.value:
                try:
                    seen.add(int(json.loads(entry.value).get("pid", -1)))
                except (ValueError, TypeError):
                    pass
    finally:
        await watcher.stop()


def how_it_ended(proc: KeptProcess) -> str:
    """``was killed by SIGKILL (out of memory?)`` or ``exited with code 1``."""
    code = proc.returncode
    if code is None or code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"was killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")


def restart_dead(procs: list[KeptProcess]) -> list[KeptProcess]:
    """Start again, in place in ``procs``, every worker process that has ended; returns the new ones.

    A cluster whose worker died kept its server, so re-running ``nq.local()`` returned it with no
    worker at all and every job stayed queued. Each restart is said loudly (it says how the old
    process ended); its log file goes on, so the lines before the death stay readable.
    """
    new: list[KeptProcess] = []
    for i, old in enumerate(procs):
        if old.alive:
            continue
        say_loudly(
            f"nq.local(): worker process {old.thread.name} (pid {old.pid}) {how_it_ended(old)}; "
            f"restarting it (its log: {old.log_path})"
        )
        procs[i] = KeptProcess(old.argv, old.log_path, name=old.thread.name, env=old.env).start()
        new.append(procs[i])
    return new
