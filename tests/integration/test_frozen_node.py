"""A server that stops answering without closing its connections (SIGSTOP: a frozen process, or a
link cut without a FIN): the kernel keeps the TCP connection open, so only pings can tell.

nats-py pings every 2 minutes by default and gives up after two unanswered, so a worker whose node
froze took no job for 4-6 minutes while the rest of the cluster was fine. ``NAQ_PING_INTERVAL``
(default 5 s) bounds that.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from nats.errors import TimeoutError as NatsTimeoutError

from naq_nb.core.errors import JobNotFinishedError, NaqConnectionError
from naq_nb.core.queue import Queue
from naq_nb.core.results import wait_for_result
from naq_nb.core.settings import Settings
from naq_nb.core.worker import Worker

from jobs import add
from helpers import connect_when_clustered

pytestmark = pytest.mark.xdist_group("cluster")  # three servers at once: not beside another such test


async def _answered(call, bound: float):
    end = time.monotonic() + bound
    while True:
        try:
            return await call()
        except (NaqConnectionError, NatsTimeoutError, JobNotFinishedError):
            if time.monotonic() > end:
                raise


async def test_a_worker_whose_node_froze_takes_jobs_on_another_node(three_nodes, naq_prefix):
    frozen = three_nodes[0]
    # The worker lists the node that will freeze first (and keeps that order); the client never uses it.
    base = dict(environ={}, prefix=naq_prefix, replicas=3, ack_wait=5.0, heartbeat_interval=1.0, publish_timeout=2.0)
    worker_settings = Settings.from_env(
        **base, nats_url=",".join(n.url for n in three_nodes), ping_interval=0.5,
        nats_options={"dont_randomize": True},
    )
    client_settings = Settings.from_env(**base, nats_url=",".join(n.url for n in three_nodes[1:]))
    broker = await connect_when_clustered(client_settings)
    worker = Worker("default", settings=worker_settings, concurrency=2)
    await worker.start()
    try:
        assert worker.broker.nc.connected_url.port == int(frozen.url.rsplit(":", 1)[1])
        q = Queue(broker, "default")
        first = await q.enqueue(add, 1, 2)
        assert (await wait_for_result(broker, first.job_id, timeout=30)).value() == 3

        os.kill(frozen.proc.pid, signal.SIGSTOP)
        job = q.make_job(add, (2, 3))
        # Streams and buckets led by the frozen node elect other leaders first: until then the
        # client's calls time out. A job sent again is stored once.
        await _answered(lambda: q.enqueue_job(job), 60)
        # Three 0.5 s pings unanswered and the worker is on another node; nats-py's default would
        # first ping after 120 s, and the job would still be waiting at this bound.
        result = await _answered(lambda: wait_for_result(broker, job.job_id, timeout=10, queued_seq=job.sequence), 60)
        assert result.value() == 5
        assert worker.broker.nc.connected_url.port != int(frozen.url.rsplit(":", 1)[1])
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)
        await worker.stop()
        await broker.close()


def test_ping_interval_is_a_setting_and_a_bad_one_is_refused():
    s = Settings.from_env(environ={"NAQ_PING_INTERVAL": "2.5"})
    assert s.ping_interval == 2.5
    assert s.connect_options()["ping_interval"] == 2.5
    assert s.connect_options()["max_outstanding_pings"] == 2
    assert Settings.from_env(environ={}).connect_options()["ping_interval"] == 5.0
    # A connect option given outright wins over the setting: nothing is silently replaced.
    given = Settings.from_env(environ={}, nats_options={"ping_interval": 30, "max_outstanding_pings": 4})
    assert given.connect_options()["ping_interval"] == 30
    assert given.connect_options()["max_outstanding_pings"] == 4
    for bad in ("0", "-1", "nan", "soon"):
        with pytest.raises(ValueError, match="NAQ_PING_INTERVAL"):
            Settings.from_env(environ={"NAQ_PING_INTERVAL": bad})
