"""Admin commands: purge, list-workers, jobs, job, cancel, failed, layout."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..core.drift import Drift, apply_settings, read_drift
from ..core.broker import Broker
from ..core.errors import ConcurrentUpdateError, JobNotFoundError, SerializationError
from ..core.failed import FailedFinder, count_failed, list_failed, requeue_failed, requeueable_seqs
from ..core.cancel import cancel_job, purge_queue
from ..core.job import JobStatus
from ..core.queue import get_status
from ..core.registry import list_workers
from .common import add_url, job_id, positive_int, print_table, queue_name, terminal_text, utc_time, with_broker
from .errors import UsageError

__all__ = ["register"]

_LIST_LIMIT = 1000  # entries `naq failed list` prints unless --limit says otherwise


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("purge", help="remove all queued jobs from queues")
    p.add_argument(
        "queues", nargs="*", default=None, type=queue_name, help="queues to empty (default: $NAQ_DEFAULT_QUEUE)"
    )
    add_url(p)
    p.set_defaults(func=_purge)

    p = sub.add_parser("list-workers", help="list live workers (from their heartbeats)")
    add_url(p)
    p.set_defaults(func=_workers)

    p = sub.add_parser("jobs", help="show queue depths, or one job's status with --id")
    p.add_argument(
        "queues",
        nargs="*",
        default=None,
        type=queue_name,
        help="queues to show (default: the default queue and served ones)",
    )
    p.add_argument("--id", dest="job_id", default=None, type=job_id, help="show this job's status record")
    add_url(p)
    p.set_defaults(func=_jobs)

    p = sub.add_parser("cancel", help="cancel a job")
    p.add_argument("job_id", type=job_id, help="the job's id (a schedule's id cancels its calendar entry too)")
    add_url(p)
    p.set_defaults(func=_cancel)

    p = sub.add_parser("failed", help="list failed jobs, or requeue them")
    p.add_argument("action", nargs="?", choices=["list", "requeue"], default="list", help="default: list")
    p.add_argument("refs", nargs="*", help="job ids, or failed-stream sequence numbers (N or #N), to requeue")
    p.add_argument("--queue", "-q", default=None, type=queue_name, help="only failed jobs of this queue")
    p.add_argument("--all", action="store_true", help="requeue every failed job (of --queue)")
    p.add_argument("--traceback", action="store_true", help="print each job's traceback")
    p.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help=f"list: show at most N entries, oldest first (default {_LIST_LIMIT}; more are counted on stderr)",
    )
    add_url(p)
    p.set_defaults(func=_failed)

    p = sub.add_parser(
        "layout",
        help="show the age limits (TTLs) and replicas of naq's streams and its consumers' ack_wait against "
        "the settings, or --apply them",
    )
    p.add_argument(
        "--apply", action="store_true", help="set the age limits the settings ask (NAQ_RESULT_TTL, ...) on the server"
    )
    add_url(p)
    p.set_defaults(func=_layout)


def _purge(args: argparse.Namespace) -> int:
    async def run(b: Broker) -> None:
        for name in args.queues or [b.settings.default_queue]:
            n = await purge_queue(b, name)
            print(f"purged {n} job(s) from queue {name!r}")

    with_broker(args, run)
    return 0


def _workers(args: argparse.Namespace) -> int:
    # list_workers skips (with a warning) any record decode_heartbeat refuses, and a record it
    # keeps has queues and running as lists of strings: a forged record never breaks the table.
    rows: list[dict[str, Any]] = [
        {**r, "queues": ",".join(r["queues"]), "running": len(r["running"]), "age": f"{r['heartbeat_age']:.1f}s"}
        for r in with_broker(args, list_workers)
    ]
    print_table(rows, ["id", "host", "pid", "queues", "concurrency", "running", "state", "age"])
    return 0


def _jobs(args: argparse.Namespace) -> int:
    async def run(b: Broker) -> list[dict[str, Any]]:
        if args.job_id:
            return [await _with_last_run(b, args.job_id, dict(await get_status(b, args.job_id)))]
        from ..core.depths import queue_depths

        # Every queue with jobs, served or not (a queue nobody serves is the one to notice).
        served: dict[str, int] = {}
        for w in await list_workers(b):
            for q in w["queues"]:  # valid queue names: decode_heartbeat checked them
                served[q] = served.get(q, 0) + 1
        depths = await queue_depths(b, args.queues or [b.settings.default_queue, *served])
        return [
            {"queue": q, "queued": d["queued"], "at_workers": d["held"], "workers": served.get(q, 0)}
            for q, d in depths.items()
            if not args.queues or q in args.queues
        ]

    rows = with_broker(args, run)
    if args.job_id:
        for k, v in rows[0].items():
            if k != "traceback":
                print(f"{terminal_text(k):>12}: {terminal_text(v)}")
        if rows[0].get("traceback"):
            print(terminal_text(rows[0]["traceback"], lines=True))
    else:
        print_table(rows, ["queue", "queued", "at_workers", "workers"])
    return 0


async def _with_last_run(b: Broker, sid: str, rec: dict[str, Any]) -> dict[str, Any]:
    """A recurring schedule's own record with its status made true: the scheduler marks it
    ``succeeded`` once its last run is *fired*, whatever that run did, so ``status`` reads
    ``finished`` there and, for any state, says how its last run stands (``finished, last run failed``).
    Any other record as it is. Only an id of one of this schedule's own runs is followed."""
    kind, last = rec.get("schedule"), rec.get("last_job_id")
    if not isinstance(kind, str) or kind == "once":
        return rec
    state = "finished" if rec.get("status") == JobStatus.SUCCEEDED.value else str(rec.get("status"))
    if not isinstance(last, str) or not last.startswith(f"{sid}-"):
        return {**rec, "status": f"{state}, no run yet"}
    try:
        run = str((await get_status(b, last)).get("status"))
    except (JobNotFoundError, SerializationError):  # expired, deleted, or unreadable
        run = "unknown (its record is gone)"
    return {**rec, "status": f"{state}, last run {run}"}


def _cancel(args: argparse.Namespace) -> int:
    ok = with_broker(args, lambda b: cancel_job(b, args.job_id))
    print(f"cancelled {args.job_id}" if ok else f"job {args.job_id} had already ended")
    return 0 if ok else 1


def _failed(args: argparse.Namespace) -> int:
    if args.action == "list":
        if args.refs:
            raise UsageError("naq failed list takes no job ids (did you mean `naq failed requeue`?)")
        if args.all:
            raise UsageError("naq failed list: --all only goes with requeue (a listing shows up to --limit)")
        return _failed_list(args)
    if args.limit is not None:
        raise UsageError("naq failed requeue: --limit only goes with list (requeue --all requeues every entry)")
    if args.all and args.refs:  # the named ones would be requeued twice: the second time, an error midway
        raise UsageError("naq failed requeue: name job ids or sequences, or --all, not both")
    if not args.refs and not args.all:
        raise UsageError("naq failed requeue: name job ids or sequences (#N), or --all")
    return _failed_requeue(args)


def _failed_list(args: argparse.Namespace) -> int:
    limit = args.limit or _LIST_LIMIT

    async def run(b: Broker) -> list[Any]:
        entries = await list_failed(b, args.queue, limit)
        if len(entries) >= limit:  # a cut listing says so: 1,000 rows of 10,000 read as all of them
            total = await count_failed(b, args.queue)
            if total > len(entries):
                print(
                    f"naq: showing the oldest {len(entries)} of {total} failed entries "
                    "(--limit N for more, -q QUEUE to narrow)",
                    file=sys.stderr,
                )
        return entries

    out = with_broker(args, run)
    for e in out:
        e["failed_at"] = utc_time(e["failed_at"])
        e["reason"] = (e["reason"] or "")[:60]
    print_table(out, ["seq", "job_id", "queue", "func", "attempts", "failed_at", "reason"])
    if args.traceback:
        for e in out:
            print(f"--- {terminal_text(e['job_id'])} (seq {e['seq']})\n{terminal_text(e['traceback'], lines=True)}")
    return 0


def _failed_requeue(args: argparse.Namespace) -> int:
    skipped: list[str | int] = []

    async def run(b: Broker) -> None:
        # --all: every entry, not a listing's first page (only their sequence numbers are held)
        refs: list[str | int] = list(args.refs) if not args.all else list(await requeueable_seqs(b, args.queue))
        # One finder for all: the ids their status records do not settle cost one pass over the stream together.
        finder = FailedFinder(b, [r for r in refs if isinstance(r, str)])
        for r in refs:  # each printed as it is done: an error further on must not hide it
            try:
                jid = await requeue_failed(b, r, finder=finder)
            except (ConcurrentUpdateError, JobNotFoundError) as exc:
                # Out of date (its job ran again) or gone (another requeue took it since --all read the
                # stream, the dashboard's button say): --all names it and goes on with the others.
                if not args.all:
                    raise
                print(f"naq: error: {terminal_text(exc, lines=True)}", file=sys.stderr, flush=True)
                skipped.append(r)
                continue
            print(f"requeued {terminal_text(jid)}", flush=True)

    with_broker(args, run)
    return 1 if skipped else 0


def _layout(args: argparse.Namespace) -> int:
    async def run(b: Broker) -> tuple[list[Drift], tuple[list[Drift], list[tuple[Drift, str]]]]:
        applied = await apply_settings(b) if args.apply else ([], [])
        return await read_drift(b), applied

    found, (changed, refused) = with_broker(args, run)
    for c in changed:
        print(f"{_where(c)}: {c.what} {_shown(c, c.have)} -> {_shown(c, c.want)} ({c.variable})")
    for c, why in refused:
        print(
            f"naq: {_where(c)}: {c.what} stays {_shown(c, c.have)}: the server refused {_shown(c, c.want)}: {why}",
            file=sys.stderr,
        )
    rows = [
        {
            "stream": f"{d.stream} consumer {d.consumer}" if d.consumer else d.stream,
            "what": d.what,
            "setting": d.variable,
            "server": "(not made yet)" if d.have is None else _shown(d, d.have),
            "settings": _shown(d, d.want),
            "note": "differs: --apply sets it" if d.differs else "",
        }
        for d in found
    ]
    print_table(rows, ["stream", "what", "setting", "server", "settings", "note"])
    return 1 if refused else 0


def _where(d: Drift) -> str:
    return f"consumer {d.consumer}" if d.consumer else d.stream


def _shown(d: Drift, value: float | None) -> str:
    if d.what == "replicas":
        return f"{value:g}"
    return "no limit" if not value else f"{value:g}s"
