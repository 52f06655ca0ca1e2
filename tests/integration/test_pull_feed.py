"""The worker's pull feed: one open pull request, asked again the moment it expires or is spent."""

import asyncio

from naq_nb.core.layout import pull_api_subject
from naq_nb.core.puller import PullFeed


async def test_an_expired_request_is_asked_again_at_once(broker):
    """A job published after the feed's request expired arrives through the request made at the
    expiry itself, with nobody calling ``want`` on a timer."""
    consumer = await broker.ensure_consumer("default")
    got: asyncio.Queue = asyncio.Queue()
    expired = asyncio.Event()

    async def again() -> None:
        expired.set()
        await feed.want(1)

    feed = PullFeed(
        broker.nc,
        pull_api_subject(broker.layout.jobs_stream, consumer),
        got.put_nowait,
        expires=0.3,
        on_ended=again,
    )
    await feed.start()
    try:
        assert await feed.want(1)
        await asyncio.wait_for(expired.wait(), 30)
        await broker.js.publish(broker.layout.queue_subject("default"), b"x", headers={"Naq-Meta": "{}"})
        msg = await asyncio.wait_for(got.get(), 30)
        assert msg.data == b"x"
    finally:
        await feed.close()


async def test_a_spent_request_is_asked_again_at_once(broker):
    """A request whose credit the last message spent must be asked again then: slots freed while it
    was open are not in it. Without that, a job that enqueued a job and waits for it, having spent
    the request itself, left its child queued until the worker's once-a-second top-up."""
    consumer = await broker.ensure_consumer("default")
    got: asyncio.Queue = asyncio.Queue()
    ended = asyncio.Event()

    async def again() -> None:
        ended.set()

    api = pull_api_subject(broker.layout.jobs_stream, consumer)
    feed = PullFeed(broker.nc, api, got.put_nowait, expires=120, on_ended=again)  # (no expiry in this test)
    await feed.start()
    try:
        assert await feed.want(1)
        await broker.js.publish(broker.layout.queue_subject("default"), b"x", headers={"Naq-Meta": "{}"})
        assert (await asyncio.wait_for(got.get(), 30)).data == b"x"
        assert feed.credit == 0
        await asyncio.wait_for(ended.wait(), 10)
    finally:
        await feed.close()


async def test_the_worker_tops_up_when_its_request_ends(start_worker):
    w = await start_worker("default", concurrency=2)
    feed = w._feeds["default"]
    assert feed.on_ended is not None
    feed.reset()  # as after the server's 408, or the last message of a request: no request open
    await feed.on_ended()
    assert feed.credit == 4, "free slots plus prefetch are asked for again"
