"""SingleFlight: one run per key among concurrent callers; a waiter outlives its owner's cancel."""

from __future__ import annotations

import asyncio

from naq_nb.core.singleflight import SingleFlight


async def test_callers_at_once_share_one_run_and_a_cancelled_owner_leaves_the_waiter_its_own():
    flights, runs, gate = SingleFlight(), [], asyncio.Event()

    async def make() -> None:
        runs.append(1)
        await gate.wait()

    async def until(pred) -> None:
        for _ in range(100):  # a few loop turns: no timing
            if pred():
                return
            await asyncio.sleep(0)
        raise AssertionError("never came")

    owner = asyncio.create_task(flights.run("k", make))
    await until(lambda: runs)
    waiters = [asyncio.create_task(flights.run("k", make)) for _ in range(2)]
    for _ in range(10):
        await asyncio.sleep(0)
    assert runs == [1], "the waiters wait"
    owner.cancel()  # the waiters run it again, once
    await until(lambda: len(runs) == 2)
    for _ in range(10):
        await asyncio.sleep(0)
    gate.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert runs == [1, 1] and owner.cancelled()
