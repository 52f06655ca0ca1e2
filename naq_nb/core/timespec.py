"""The time values a schedule is made of, checked: seconds, epoch times, intervals, cron, zones.

Each check returns the value in the form the schedules keep (float seconds, epoch
seconds in UTC, a croniter-accepted expression) or raises naming what was wrong,
so a bad value is refused at the call that gave it, not when the scheduler reads it.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .errors import ConfigurationError

__all__ = [
    "MIN_INTERVAL",
    "EARLIEST",
    "LATEST",
    "positive_seconds",
    "to_epoch",
    "after_delay",
    "check_interval",
    "zone",
    "validate_cron",
]

MIN_INTERVAL = 0.1  # seconds: a shorter step is below what a schedule is for (and 1e-9 is no step at all)
# Epoch seconds a calendar can be computed at (datetime's years 1-9999, a day inside each end).
EARLIEST, LATEST = -62135596800.0 + 86400, 253402300799.0 - 86400


def positive_seconds(value: Any, what: str, *, zero_ok: bool = False) -> float:
    """``value`` as float seconds: a real, finite number > 0 (>= 0 with ``zero_ok``), else an error naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}: {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise ConfigurationError(
            f"{what} must be a finite number of seconds {'>= 0' if zero_ok else '> 0'}, not {value!r}"
        )
    return float(value)


def to_epoch(when: datetime | float | int, what: str = "time") -> float:
    """Epoch seconds of ``when``; a naive datetime is read as UTC."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        try:
            t = when.timestamp()
        except (OverflowError, ValueError):
            t = math.inf  # (a time next to year 1 or 9999, in a zone that pushes it over)
    elif isinstance(when, (int, float)) and not isinstance(when, bool):
        if not math.isfinite(when):
            raise ConfigurationError(f"{what} must be a finite time, not {when!r}")
        t = float(when)
    else:
        raise TypeError(f"{what} must be a datetime or epoch seconds, not {type(when).__name__}: {when!r}")
    if not EARLIEST <= t <= LATEST:
        raise ConfigurationError(
            f"{what} must be a time from 0001-01-02 to 9999-12-30 (UTC; a day inside each end of what "
            f"datetime can hold, so any time zone can show it), not {when!r}"
        )
    return t


def after_delay(seconds: float, what: str, given: Any = None) -> float:
    """Epoch seconds ``seconds`` from now, else an error naming the delay ``what`` as the caller gave
    it (``given``), not the epoch time it would have made."""
    t = time.time() + seconds
    if not EARLIEST <= t <= LATEST:
        shown = str(given) if isinstance(given, timedelta) else f"{seconds:g} s"
        raise ConfigurationError(
            f"{what} {shown} from now falls outside 0001-01-02 to 9999-12-30 (UTC), the times a schedule can hold"
        )
    return t


def check_interval(value: Any) -> float:
    """``value`` as the seconds of an interval schedule, at least :data:`MIN_INTERVAL`."""
    seconds = positive_seconds(value, "interval")
    if seconds < MIN_INTERVAL or time.time() + seconds > LATEST:  # (a next run past 9999 never fires)
        raise ConfigurationError(f"interval must be at least {MIN_INTERVAL:g} seconds, within 9999, not {value!r}")
    return seconds


def zone(tz: str | None) -> ZoneInfo | timezone:
    """The zone named ``tz`` (UTC when empty), else an error naming it."""
    if not tz:
        return timezone.utc
    if not isinstance(tz, str):
        raise TypeError(f"timezone must be an IANA name like 'Europe/Paris', not {type(tz).__name__}: {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"unknown timezone {tz!r} (use an IANA name like 'Europe/Paris')") from None


def validate_cron(expr: object) -> str:
    """Return ``expr`` if croniter accepts it (5 fields, or 6 with seconds last), else raise naming it."""
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigurationError(f"cron must be a non-empty string like '*/5 * * * *', not {expr!r}")
    n = len(expr.split())
    if n not in (5, 6):
        raise ConfigurationError(
            f"invalid cron expression {expr!r}: {n} fields; use 5 (minute hour day month "
            "weekday) or 6 (the sixth is seconds)"
        )
    try:
        croniter(expr, 0.0).get_next(float)
    except (ValueError, KeyError) as exc:
        raise ConfigurationError(f"invalid cron expression {expr!r}: {exc}") from None
    return expr
