"""Subscriptions handled as nats-py's reader parses each message (core/inbound.py), on a real server."""

import asyncio
import logging

from naq_nb.core.inbound import subscribe_inline


async def test_messages_reach_the_handler_in_order_within_the_reader(broker):
    nc = broker.nc
    got: list[bytes] = []
    tasks: list[asyncio.Task | None] = []
    done = asyncio.Event()

    def handler(msg) -> None:
        got.append(msg.data)
        tasks.append(asyncio.current_task())
        if len(got) == 500:
            done.set()

    sub = await subscribe_inline(nc, "inline.test", handler)
    for i in range(500):
        await nc.publish("inline.test", str(i).encode())
    await asyncio.wait_for(done.wait(), 30)
    assert got == [str(i).encode() for i in range(500)]
    assert sub.pending_msgs == 0 and sub._pending_size == 0  # nothing is counted as kept
    # Called from nats-py's reading task, not from a task of the subscription's own.
    assert {t.get_coro().__qualname__ for t in tasks if t is not None} == {"Client._read_loop"}
    await sub.unsubscribe()


async def test_a_failing_handler_loses_its_message_only(broker, caplog):
    nc = broker.nc
    got: list[bytes] = []
    done = asyncio.Event()

    def handler(msg) -> None:
        if msg.data == b"bad":
            raise ValueError("handler bug")
        got.append(msg.data)
        if msg.data == b"last":
            done.set()

    sub = await subscribe_inline(nc, "inline.fail", handler)
    with caplog.at_level(logging.ERROR, logger="naq_nb.core"):
        for data in (b"a", b"bad", b"b", b"last"):
            await nc.publish("inline.fail", data)
        await asyncio.wait_for(done.wait(), 30)
    assert got == [b"a", b"b", b"last"]
    assert "handler of inline.fail failed" in caplog.text and "handler bug" in caplog.text
    assert nc.is_connected  # the connection read on
    # Other subscriptions on the connection are untouched.
    assert await broker.js.account_info() is not None
    await sub.unsubscribe()


async def test_unsubscribe_and_drain_end_the_subscription(broker):
    nc = broker.nc
    got: list[bytes] = []
    first = asyncio.Event()

    def handler(msg) -> None:
        got.append(msg.data)
        first.set()

    sub = await subscribe_inline(nc, "inline.unsub", handler)
    await nc.publish("inline.unsub", b"1")
    await asyncio.wait_for(first.wait(), 30)
    assert got == [b"1"]
    await sub.unsubscribe()
    await nc.publish("inline.unsub", b"2")
    await nc.flush()  # a PING after the PUB: the server has routed it by the PONG
    assert got == [b"1"]
    assert sub._wait_for_msgs_task is None or sub._wait_for_msgs_task.done()

    sub2 = await subscribe_inline(nc, "inline.drain", lambda m: got.append(m.data))
    await asyncio.wait_for(sub2.drain(), 10)  # waits for nothing kept


async def test_a_handler_raising_cancelled_error_does_not_stop_the_reader(broker):
    """A CancelledError out of a handler must not end nats-py's reading task (no other
    subscription on the connection would get a message again)."""
    nc = broker.nc
    other = asyncio.Event()

    def bad(msg) -> None:
        raise asyncio.CancelledError

    async def on_other(msg) -> None:
        other.set()

    sub = await subscribe_inline(nc, "inline.cancel", bad)
    sub2 = await nc.subscribe("inline.other", cb=on_other)
    await nc.publish("inline.cancel", b"x")
    await nc.publish("inline.other", b"y")
    await asyncio.wait_for(other.wait(), 10)
    await sub.unsubscribe()
    await sub2.unsubscribe()
