"""Where the server's layout differs from the settings of the process that connects: the age limits
(TTLs) of naq_nb's buckets, its queue consumers' ack_wait, its streams' replicas.

Each is set by whoever makes the stream or consumer first and is shared by every process on the
server. Connecting does not change it: a notebook left at the defaults must not undo what a
deployment chose, nor two processes with different settings take turns. But a setting that differs
must not vanish silently either: a process whose setting is not the default, and differs from the
server's, says so once, and ``naq layout --apply`` (:func:`apply_settings`) makes the layout follow
the settings of the process that runs it. A worker whose consumer's ack_wait is shorter than its own
keeps its jobs alive within the consumer's (:func:`held_ack_wait`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Protocol, Sequence

from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from .layout import Layout
from .settings import ENV_VARS, Settings

__all__ = ["Drift", "apply_settings", "held_ack_wait", "note_drift", "read_drift"]

log = logging.getLogger(__name__)


class Connected(Protocol):
    """What these checks use of a :class:`~naq_nb.core.broker.Broker` (which calls :func:`note_drift`)."""

    js: JetStreamContext
    layout: Layout
    settings: Settings


_VARS = {attr: var for var, (attr, _default, _doc) in ENV_VARS.items()}
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings)}
# (prefix and setting, have, want) already said by this process: one line for NAQ_STATUS_TTL, not one for
# each of the three streams it sets
_told: set[tuple[str, float, float]] = set()


@dataclass(frozen=True)
class Drift:
    """One setting as the server keeps it: a stream's ``"age limit"`` or ``"replicas"``, or a queue
    consumer's ``"ack_wait"`` (``consumer`` set, ``stream`` its stream). ``have`` is the server's (0: no
    age limit; None: not made yet), ``want`` the settings', ``variable`` the setting's name."""

    stream: str
    what: str
    variable: str
    have: float | None
    want: float
    consumer: str = ""

    @property
    def differs(self) -> bool:
        return self.have is not None and _differs(self.have, self.want)


def _differs(have: float, want: float) -> bool:
    return abs(have - want) > 1e-3  # the server keeps nanoseconds; nats-py gives back float seconds


def note_drift(broker: Connected, stream: str, cfg: api.StreamConfig) -> None:
    """Say (once per process) where ``stream``'s config is not what this process's settings ask."""
    want_replicas = broker.layout.replicas
    if (cfg.num_replicas or 1) != want_replicas and want_replicas != _DEFAULTS["replicas"]:
        _say(
            f"{broker.layout.prefix} replicas",
            cfg.num_replicas or 1,
            want_replicas,
            f"NAQ_REPLICAS is {want_replicas} but stream {stream} keeps {cfg.num_replicas or 1} replica(s) (made "
            "so by another process or an earlier setting): it stays, as every process on this server shares it; "
            "`naq layout --apply` sets it to this process's settings",
        )
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


async def held_ack_wait(broker: Connected, queues: Sequence[str]) -> float:
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


async def read_drift(broker: Connected) -> list[Drift]:
    """Every age limit and replica count the layout sets, and every queue consumer's ack_wait, as the
    server keeps them now."""
    lay = broker.layout
    ages = lay.age_limits()
    found = []
    for stream in lay.stream_names():
        try:
            cfg: api.StreamConfig | None = (await broker.js.stream_info(stream)).config
        except NotFoundError:
            cfg = None
        if stream in ages:
            field, want = ages[stream]
            max_age = None if cfg is None else cfg.max_age or 0.0
            found.append(Drift(stream, "age limit", _VARS[field], max_age, want))
        replicas = None if cfg is None else cfg.num_replicas or 1
        found.append(Drift(stream, "replicas", "NAQ_REPLICAS", replicas, lay.replicas))
    try:
        consumers = await broker.js.consumers_info(lay.jobs_stream)
    except NotFoundError:
        consumers = []
    for info in sorted(consumers, key=lambda c: c.name or ""):
        ack_wait = info.config.ack_wait or 0.0
        found.append(Drift(lay.jobs_stream, "ack_wait", "NAQ_ACK_WAIT", ack_wait, lay.ack_wait, info.name or ""))
    return found


async def apply_settings(broker: Connected) -> tuple[list[Drift], list[tuple[Drift, str]]]:
    """Give every existing stream of the layout the age limit and replicas these settings ask, and every
    queue consumer their ack_wait. Returns those changed (``have`` as it was) and those the server
    refused, with its reason (more replicas than a cluster's servers, a role not allowed to edit
    streams): one refusal does not stop the others. Entries older than a shortened age limit go at once."""
    changed, refused = [], []
    for d in await read_drift(broker):
        if not d.differs:
            continue
        try:
            await _apply(broker, d)
        except APIError as exc:
            refused.append((d, exc.description or str(exc)))
        else:
            changed.append(d)
    return changed, refused


async def _apply(broker: Connected, d: Drift) -> None:
    if d.consumer:
        info = await broker.js.consumer_info(d.stream, d.consumer)
        await broker.js.add_consumer(d.stream, info.config.evolve(ack_wait=d.want))  # an update
        return
    cfg = (await broker.js.stream_info(d.stream)).config
    if d.what == "replicas":
        cfg.num_replicas = int(d.want)
    else:
        cfg.max_age = d.want
        if (cfg.duplicate_window or 0) > d.want:  # the server refuses a window longer than the age limit
            cfg.duplicate_window = d.want
    await broker.js.update_stream(cfg)
