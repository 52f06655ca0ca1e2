"""The age limits (TTLs) of naq_nb's buckets, against the settings of the process that connects.

A bucket's age limit is set by whoever makes it first and is shared by every process on the server.
Connecting does not change it: a notebook left at the defaults must not undo what a deployment
chose, nor two processes with different settings take turns. But a setting that differs from the
bucket must not vanish silently either: a process whose TTL setting is not the default, and differs
from its bucket's, says so once, and ``naq layout --apply`` (:func:`apply_age_limits`) makes the
buckets follow the settings of the process that runs it. A queue's consumer keeps its ack_wait the
same way (:func:`held_ack_wait`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from nats.js import api
from nats.js.errors import NotFoundError

from .settings import ENV_VARS, Settings

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["AgeLimit", "apply_age_limits", "held_ack_wait", "note_age_limit", "read_age_limits"]

log = logging.getLogger(__name__)

_VARS = {attr: var for var, (attr, _default, _doc) in ENV_VARS.items()}
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings)}
# (prefix and setting, have, want) already said by this process: one line for NAQ_STATUS_TTL, not one for
# each of the three streams it sets
_told: set[tuple[str, float, float]] = set()


@dataclass(frozen=True)
class AgeLimit:
    """One stream's age limit, or one queue consumer's ack_wait (``consumer`` set, ``stream`` its stream):
    what the server keeps (``have``, 0 = none; None = not made yet) and what the settings ask
    (``want``), with the variable that sets it."""

    stream: str
    variable: str
    have: float | None
    want: float
    consumer: str = ""

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


async def held_ack_wait(broker: "Broker", queues: Sequence[str]) -> float:
    """The time within which a worker of ``queues`` must tell the server its running jobs are alive:
    ``NAQ_ACK_WAIT``, or a consumer's shorter ack_wait (a consumer keeps the one it was made with: a
    worker keeping alive at its own, longer, pace had its long jobs redelivered as they ran). A
    difference is said once when the setting is not the default."""
    want = held = broker.layout.ack_wait
    for queue in queues:
        name = broker.layout.consumer_name(queue)
        have = (await broker.js.consumer_info(broker.layout.jobs_stream, name)).config.ack_wait or want
        held = min(held, have)
        if _differs(have, want) and want != _DEFAULTS["ack_wait"]:
            _say(
                f"{broker.layout.prefix} ack_wait",
                have,
                want,
                f"NAQ_ACK_WAIT is {want:g}s but consumer {name} (queue {queue!r}) redelivers after {have:g}s (made "
                "so by another process or an earlier setting): it stays, as every worker of the queue shares it; "
                "`naq layout --apply` sets it to this process's settings",
            )
    return held


async def read_age_limits(broker: "Broker") -> list[AgeLimit]:
    """Every age limit the layout sets, and every queue consumer's ack_wait, as the server keeps them now."""
    limits = []
    for stream, (field, want) in broker.layout.age_limits().items():
        try:
            have: float | None = (await broker.js.stream_info(stream)).config.max_age or 0.0
        except NotFoundError:
            have = None
        limits.append(AgeLimit(stream, _VARS[field], have, want))
    jobs = broker.layout.jobs_stream
    try:
        consumers = await broker.js.consumers_info(jobs)
    except NotFoundError:
        consumers = []
    for info in sorted(consumers, key=lambda c: c.name or ""):
        ack_wait = info.config.ack_wait or 0.0
        limits.append(AgeLimit(jobs, "NAQ_ACK_WAIT", ack_wait, broker.layout.ack_wait, consumer=info.name or ""))
    return limits


async def apply_age_limits(broker: "Broker") -> list[AgeLimit]:
    """Give every existing stream of the layout the age limit these settings ask, and every queue
    consumer their ack_wait; returns those changed (``have`` as it was). Entries older than a shortened
    limit go at once."""
    changed = []
    for limit in await read_age_limits(broker):
        if not limit.differs:
            continue
        if limit.consumer:
            info = await broker.js.consumer_info(limit.stream, limit.consumer)
            await broker.js.add_consumer(limit.stream, info.config.evolve(ack_wait=limit.want))  # an update
        else:
            cfg = (await broker.js.stream_info(limit.stream)).config
            cfg.max_age = limit.want
            if (cfg.duplicate_window or 0) > limit.want:  # the server refuses a window longer than the age limit
                cfg.duplicate_window = limit.want
            await broker.js.update_stream(cfg)
        changed.append(limit)
    return changed
