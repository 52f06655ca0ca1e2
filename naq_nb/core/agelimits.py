"""The age limits (TTLs) of naq_nb's buckets, against the settings of the process that connects.

A bucket's age limit is set by whoever makes it first and is shared by every process on the server.
Connecting does not change it: a notebook left at the defaults must not undo what a deployment
chose, nor two processes with different settings take turns. But a setting that differs from the
bucket must not vanish silently either: a process whose TTL setting is not the default, and differs
from its bucket's, says so once, and ``naq layout --apply`` (:func:`apply_age_limits`) makes the
buckets follow the settings of the process that runs it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nats.js import api
from nats.js.errors import NotFoundError

from .settings import ENV_VARS, Settings

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["AgeLimit", "apply_age_limits", "note_age_limit", "read_age_limits"]

log = logging.getLogger(__name__)

_VARS = {attr: var for var, (attr, _default, _doc) in ENV_VARS.items()}
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings)}
# (prefix and setting, have, want) already said by this process: one line for NAQ_STATUS_TTL, not one for
# each of the three streams it sets
_told: set[tuple[str, float, float]] = set()


@dataclass(frozen=True)
class AgeLimit:
    """One stream's age limit: what the server keeps (``have``, 0 = none; None = not made yet) and what
    the settings ask (``want``), with the variable that sets it."""

    stream: str
    variable: str
    have: float | None
    want: float

    @property
    def differs(self) -> bool:
        return self.have is not None and _differs(self.have, self.want)


def _differs(have: float, want: float) -> bool:
    return abs(have - want) > 1e-3  # the server keeps nanoseconds; nats-py gives back float seconds


def note_age_limit(broker: "Broker", stream: str, cfg: api.StreamConfig) -> None:
    """Say (once per process) that ``stream``'s age limit is not the one this process's settings ask."""
    wanted = broker.layout.age_limits().get(stream)
    if wanted is None:
        return
    field, want = wanted
    have = cfg.max_age or 0.0
    s = broker.settings
    if field == "worker_ttl" and 0 < have <= s.heartbeat_interval:
        _say(
            f"{broker.layout.prefix} heartbeat",
            have,
            want,
            f"bucket stream {stream} keeps worker records {have:g}s, not longer than NAQ_HEARTBEAT "
            f"({s.heartbeat_interval:g}s): live workers vanish from `naq list-workers` between heartbeats; "
            "`naq layout --apply` sets the settings' NAQ_WORKER_TTL",
        )
    elif _differs(have, want) and want != _DEFAULTS[field]:
        _say(
            f"{broker.layout.prefix} {field}",
            have,
            want,
            f"{_VARS[field]} is {want:g}s but stream {stream} keeps entries "
            f"{f'{have:g}s' if have else 'without limit'} (made so by another process or an earlier "
            "setting): its limit stays, as every process on this server shares it; "
            "`naq layout --apply` sets it to this process's settings",
        )


def _say(what: str, have: float, want: float, message: str) -> None:
    if (what, have, want) not in _told:
        _told.add((what, have, want))
        log.warning("%s", message)


async def read_age_limits(broker: "Broker") -> list[AgeLimit]:
    """Every age limit the layout sets, as the server keeps it now."""
    limits = []
    for stream, (field, want) in broker.layout.age_limits().items():
        try:
            have: float | None = (await broker.js.stream_info(stream)).config.max_age or 0.0
        except NotFoundError:
            have = None
        limits.append(AgeLimit(stream, _VARS[field], have, want))
    return limits


async def apply_age_limits(broker: "Broker") -> list[AgeLimit]:
    """Give every existing stream of the layout the age limit these settings ask; returns those changed
    (``have`` the limit before). Entries older than a shortened limit go at once."""
    changed = []
    for limit in await read_age_limits(broker):
        if not limit.differs:
            continue
        cfg = (await broker.js.stream_info(limit.stream)).config
        cfg.max_age = limit.want
        if (cfg.duplicate_window or 0) > limit.want:  # the server refuses a window longer than the age limit
            cfg.duplicate_window = limit.want
        await broker.js.update_stream(cfg)
        changed.append(limit)
    return changed
