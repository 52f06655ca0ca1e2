"""``naq scheduler``, ``naq list-scheduled`` and ``naq job-control`` (naq's names)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt

from ..core.scheduler import Scheduler
from ..core.errors import ConfigurationError
from ..core.schedules import change_schedule, list_schedules
from ..core.stopsignals import stop_signals
from ..core.timespec import check_interval, to_epoch
from .common import (
    UsageError,
    add_url,
    job_id,
    positive_int,
    positive_seconds,
    print_table,
    queue_name,
    settings_from,
    utc_time,
    with_broker,
)

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scheduler", help="run a scheduler (several may run; one leads)")
    add_url(p)
    p.add_argument("--instance-id", "-i", default=None, help="this instance's name in the leader lease")
    p.add_argument("--disable-ha", action="store_true", help="no leader election: the only scheduler")
    p.add_argument(
        "--poll-interval",
        "-p",
        type=_interval,
        default=None,
        metavar="SECS",
        help="longest sleep between checks (jobs fire at their due time anyway; naq's option)",
    )
    p.set_defaults(func=_scheduler)

    p = sub.add_parser("list-scheduled", help="list scheduled jobs (delayed, cron, interval)")
    add_url(p)
    p.add_argument(
        "--status", "-s", choices=["active", "paused", "finished"], default=None, help="only schedules with this status"
    )
    p.add_argument("--job-id", "-j", default=None, type=job_id, help="only this schedule id")
    p.add_argument("--queue", "-q", default=None, type=queue_name, help="only schedules of this queue")
    p.add_argument(
        "--detailed",
        "-d",
        action="store_true",
        help="also show the calendar details: timezone, misfire policy, last run, paused",
    )
    p.set_defaults(func=_list)

    p = sub.add_parser("job-control", help="cancel, pause, resume or reschedule a scheduled job")
    p.add_argument("job_id", type=job_id, help="the schedule id (the Job id that enqueue_at/schedule returned)")
    p.add_argument("action", choices=["cancel", "pause", "resume", "reschedule"])
    p.add_argument("--cron", default=None, help="reschedule: a new cron expression")
    p.add_argument(
        "--interval", type=_schedule_interval, default=None, help="reschedule: a new interval in seconds (>= 0.1)"
    )
    p.add_argument("--repeat", type=positive_int, default=None, help="reschedule: total number of runs")
    p.add_argument("--next-run", default=None, help="reschedule: next run, ISO time (naive = UTC) or epoch")
    add_url(p)
    p.set_defaults(func=_control)


def _schedule_interval(text: str) -> float:
    try:
        return check_interval(_interval(text))
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _interval(text: str) -> float:
    v = positive_seconds(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, not {text!r}")
    return v


def _scheduler(args: argparse.Namespace) -> int:
    s = Scheduler(settings=settings_from(args), instance_id=args.instance_id, ha=not args.disable_ha)
    if args.poll_interval is not None:
        s.max_sleep = args.poll_interval

    async def _run() -> None:
        loop = asyncio.get_running_loop()
        for sig in stop_signals():
            loop.add_signal_handler(sig, s.request_stop)
        await s.run()

    asyncio.run(_run())
    return 0


def _when(t: float | None) -> str:
    return utc_time(t, " UTC")


def _list(args: argparse.Namespace) -> int:
    rows = [s.to_row() for s in with_broker(args, list_schedules)]
    rows = [
        r
        for r in rows
        if (args.status is None or r["status"] == args.status)
        and (args.job_id is None or r["schedule_id"] == args.job_id)
        and (args.queue is None or r["queue"] == args.queue)
    ]
    for r in rows:
        r["next_run"] = _when(r["next_run"])
        r["every"] = r["cron"] or (f"{r['interval']:g}s" if r["interval"] else "once")
        r["runs"] = f"{r['runs']}/{r['repeat']}" if r["repeat"] else str(r["runs"])
        r["last_run"] = _when(r.get("last_run"))
        r["last_error"] = (r["last_error"] or "")[:80]
    cols = ["schedule_id", "function", "queue", "every", "next_run", "runs", "status"]
    if args.detailed:
        cols += ["timezone", "misfire", "last_run", "last_job_id"]
    if args.detailed or any(r["failures"] for r in rows):  # a schedule whose fires fail: how often, and why
        cols += ["failures", "last_error"]
    print_table(rows, cols)
    return 0


def _parse_time(text: str) -> float:
    when: float | dt.datetime
    try:
        when = float(text)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise UsageError(f"--next-run: not an ISO time or epoch seconds: {text!r}") from None
    try:
        return to_epoch(when, "--next-run")  # naive = UTC; finite, within the years 1-9999
    except ConfigurationError as exc:
        raise UsageError(f"{exc} ({text!r})") from None


def _control(args: argparse.Namespace) -> int:
    action, changes = args.action, {}
    given = [f"--{k.replace('_', '-')}" for k in ("cron", "interval", "repeat", "next_run") if getattr(args, k)]
    if given and action != "reschedule":
        raise UsageError(f"naq job-control {action}: {', '.join(given)} only go with reschedule")
    if action == "reschedule":
        action = "modify"
        changes = {
            k: v for k, v in dict(cron=args.cron, interval=args.interval, repeat=args.repeat).items() if v is not None
        }
        if args.next_run:
            changes["next_run"] = _parse_time(args.next_run)
        if not changes:
            raise UsageError("naq job-control reschedule: give --cron, --interval, --repeat or --next-run")
    s = with_broker(args, lambda b: change_schedule(b, args.job_id, action, **changes))
    if s is None:
        print(f"{args.job_id}: cancelled")
    else:
        print(f"{args.job_id}: {'paused' if s.paused else 'active'}, next run {_when(s.next_run) or '-'}")
    return 0
