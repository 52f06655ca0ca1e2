"""settle(): what the exit waits for before it closes naq_nb's connections (no server needed)."""

from __future__ import annotations

import asyncio

from naq_nb.core.aftercancel import run_to_end, settle


async def turns(n: int = 20) -> None:
    """A few loop turns: no timing."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_settle_waits_for_a_cancelled_call_before_and_during_the_clean_up_it_starts():
    # Between its cancel and its clean-up's start (acknowledgements in flight first) no clean-up is
    # under way yet: the exit must wait for the cancelled call itself too.
    acks_in, undone_gate, undone = asyncio.Event(), asyncio.Event(), []

    async def undo() -> None:
        await undone_gate.wait()
        undone.append(1)

    async def call() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            await acks_in.wait()
            await run_to_end(undo(), 10, "undoing the call")
            raise

    task = asyncio.create_task(call())
    await turns()
    task.cancel()
    settling = asyncio.create_task(settle(10))
    await turns()
    assert not settling.done(), "the cancelled call has not started its clean-up: waited for"
    acks_in.set()
    await turns()
    assert not settling.done(), "its clean-up is under way: waited for"
    undone_gate.set()
    assert await asyncio.wait_for(settling, 10) == [] and undone == [1] and task.cancelled()


async def test_settle_names_what_is_left_when_its_bound_runs_out():
    release = asyncio.Event()
    caller = asyncio.create_task(run_to_end(release.wait(), 10, "deleting what an upload stored"))
    await turns()
    caller.cancel()  # the call that waited returns; its clean-up goes on
    left = await settle(0.05)
    assert left == ["deleting what an upload stored"]
    release.set()
    await asyncio.wait_for(settle(10), 10)
