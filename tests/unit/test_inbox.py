"""The client's inbox of pushed results (no server): kept until read once, bounded, handed to waiting
reads on any loop."""

from __future__ import annotations

import asyncio
import threading

from naq_nb.client.inbox import ResultInbox
from naq_nb.core.layout import Layout


def test_a_record_is_kept_until_read_once():
    box = ResultInbox()
    box.deliver("j1", b"rec")
    assert box.take("j1") == b"rec"
    assert box.take("j1") is None  # a second read goes to the bucket
    assert len(box) == 0


def test_the_oldest_records_go_first_by_count_and_by_bytes():
    box = ResultInbox(max_records=2, max_bytes=100)
    for jid in ("a", "b", "c"):
        box.deliver(jid, b"x")
    assert box.take("a") is None and box.take("b") == b"x" and box.take("c") == b"x"
    box.deliver("big1", b"y" * 60)
    box.deliver("big2", b"z" * 60)  # 120 bytes > 100: big1 goes
    assert box.take("big1") is None and box.take("big2") == b"z" * 60
    box.deliver("huge", b"h" * 500)  # over the bound on its own: not kept at all
    assert box.take("huge") is None and len(box) == 0


def test_a_push_for_a_waiting_read_goes_to_it_not_to_the_store():
    async def main() -> bytes:
        box = ResultInbox()
        fut = box.wait("j1")
        assert not fut.done()
        box.deliver("j1", b"rec")
        data = await asyncio.wait_for(fut, 5)
        assert len(box) == 0
        return data

    assert asyncio.run(main()) == b"rec"


def test_a_push_already_kept_resolves_the_wait_at_once():
    async def main() -> None:
        box = ResultInbox()
        box.deliver("j1", b"rec")
        fut = box.wait("j1")
        assert fut.done() and fut.result() == b"rec"
        box.forget("j1", fut)

    asyncio.run(main())


def test_a_push_from_another_thread_wakes_a_read_on_its_own_loop():
    box = ResultInbox()
    registered = threading.Event()

    async def main() -> bytes:
        fut = box.wait("j1")
        registered.set()
        return await asyncio.wait_for(fut, 10)

    t = threading.Thread(target=lambda: (registered.wait(10), box.deliver("j1", b"from the loop thread")))
    t.start()
    try:
        assert asyncio.run(main()) == b"from the loop thread"
    finally:
        t.join(10)


def test_a_forgotten_wait_is_cancelled_and_a_later_push_is_kept():
    async def main() -> None:
        box = ResultInbox()
        fut = box.wait("j1")
        box.forget("j1", fut)
        assert fut.cancelled()
        box.deliver("j1", b"late")
        assert box.take("j1") == b"late"

    asyncio.run(main())


def test_a_push_is_expected_from_the_mark_until_it_comes_or_a_read_ends():
    async def main() -> None:
        box = ResultInbox(max_records=2)
        for jid in ("a", "b", "c"):
            box.expect(jid)
        assert not box.expects("a")  # bounded: the oldest marks go first (their reads ask the bucket)
        assert box.expects("b") and box.expects("c")
        box.deliver("b", b"rec")
        assert not box.expects("b")
        fut = box.wait("c")
        box.forget("c", fut)  # a read that ended without its push (a deadline): the next one reads
        assert not box.expects("c")

    asyncio.run(main())


def test_a_push_on_the_readers_own_loop_resolves_its_wait_without_a_wake_up():
    async def main() -> None:
        box = ResultInbox()
        fut = box.wait("j1")
        box.deliver("j1", b"rec")  # as a subscription callback of this loop's connection does
        assert fut.done() and fut.result() == b"rec"  # no call_soon_threadsafe round through the loop

    asyncio.run(main())


def test_a_push_to_a_callers_loop_is_waited_for_on_that_loop_only():
    async def main() -> None:
        box = ResultInbox()
        here, elsewhere = asyncio.get_running_loop(), asyncio.new_event_loop()
        try:
            box.expect("bg")  # the background loop's connection: it reads whatever the caller does
            box.expect("mine", here)
            box.expect("theirs", elsewhere)
            assert box.expects("bg") and box.expects("mine")
            # A read here while that loop may be blocked (a blocking call on its thread) would wait
            # for a push nobody can receive: it reads the bucket instead.
            assert not box.expects("theirs")
        finally:
            elsewhere.close()

    asyncio.run(main())


class _Msg:
    def __init__(self, subject: str, data: bytes, headers: dict | None = None) -> None:
        self.subject, self.data, self.headers = subject, data, headers


def _early_box(**kw) -> tuple[ResultInbox, Layout]:
    box, lay = ResultInbox(**kw), Layout()
    box._layout = lay  # what subscribe() sets
    return box, lay


_STORED = b'{"stream":"KV_naq_results","seq":7}'


def _ack(box: ResultInbox, lay: Layout, job_id: str, kind: str, data: bytes = _STORED, headers=None,
         writer: str = "w1", run: str = "1") -> None:
    box._on_msg(_Msg(lay.early_ack_head(box.token, job_id, kind, writer, run) + ".3", data, headers))


def test_an_early_push_is_handed_out_only_with_both_acknowledgements_in_any_order():
    box, lay = _early_box()
    box._on_msg(_Msg(lay.early_subject(box.token, "j1", "w1", "1"), b"rec1"))
    _ack(box, lay, "j1", "s")
    assert box.take("j1") is None
    _ack(box, lay, "j1", "r")
    assert box.take("j1") == b"rec1"
    _ack(box, lay, "j2", "r")  # the acknowledgements may come first
    _ack(box, lay, "j2", "s")
    assert box.take("j2") is None
    box._on_msg(_Msg(lay.early_subject(box.token, "j2", "w1", "1"), b"rec2"))
    assert box.take("j2") == b"rec2" and not box._unproven


def test_an_acknowledgement_that_is_an_error_or_a_status_proves_nothing():
    box, lay = _early_box()
    box._on_msg(_Msg(lay.early_subject(box.token, "j1", "w1", "1"), b"rec1"))
    _ack(box, lay, "j1", "s")
    _ack(box, lay, "j1", "r", b'{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"}}')
    _ack(box, lay, "j1", "r", b"", {"Status": "503"})  # no stream stores the subject
    _ack(box, lay, "j1", "r", b"garbage")
    assert box.take("j1") is None
    box.deliver("j1", b"")  # the worker's push after the writes: an earlier result stands, "read it"
    assert box.take("j1") == b"" and not box._unproven  # the early record is dropped with it


def test_early_pushes_never_proven_are_bounded_by_count_and_bytes():
    box, lay = _early_box(max_records=3, max_bytes=100)
    for i in range(5):
        box._on_msg(_Msg(lay.early_subject(box.token, f"j{i}", "w1", "1"), b"x"))
    assert list(box._unproven) == ["j2", "j3", "j4"]
    box._on_msg(_Msg(lay.early_subject(box.token, "big", "w1", "1"), b"y" * 99))
    assert list(box._unproven) == ["j4", "big"] and box._unproven_bytes == 100  # j2, j3 out for the bytes
    _ack(box, lay, "big", "s")
    _ack(box, lay, "big", "r")
    assert box.take("big") == b"y" * 99 and box._unproven_bytes == 1  # j4 still kept apart


def test_subjects_under_a_reply_inbox_are_told_apart():
    box, lay = _early_box()
    box._on_msg(_Msg(lay.reply_subject(box.token, "j1"), b"stored"))
    box._on_msg(_Msg(lay.reply_subject(box.token, "j2") + ".x.y", b"odd"))  # no such form: ignored
    assert box.take("j1") == b"stored" and box.take("j2") is None and not box._unproven


def test_an_early_push_is_proven_only_by_its_own_writers_acknowledgements():
    # Two runs of one job on two workers (a redelivery while the first still ran), each pushing its
    # own value, their parts interleaved: only one result write can succeed, and its acknowledgement
    # vouches for its own run's value only, whatever came between.
    box, lay = _early_box()
    box._on_msg(_Msg(lay.early_subject(box.token, "j1", "w2", "1"), b"other-run"))
    box._on_msg(_Msg(lay.early_subject(box.token, "j1", "w1", "1"), b"stored-one"))
    _ack(box, lay, "j1", "s", writer="w2")
    _ack(box, lay, "j1", "s", writer="w1")
    _ack(box, lay, "j1", "r", writer="w2", data=b'{"error":{"code":400,"err_code":10071}}')
    assert box.take("j1") is None
    _ack(box, lay, "j1", "r", writer="w1")
    assert box.take("j1") == b"stored-one" and not box._unproven and box._unproven_bytes == 0


def test_an_early_push_is_proven_only_by_the_acknowledgements_of_its_own_run():
    # One worker, two runs of one job: the first run's result write never landed (it was handed back,
    # nothing pushed after), the second's acknowledgements come before its own early record.
    box, lay = _early_box()
    box._on_msg(_Msg(lay.early_subject(box.token, "j1", "w1", "a"), b"run-a"))
    _ack(box, lay, "j1", "s", run="a")
    _ack(box, lay, "j1", "s", run="b")
    _ack(box, lay, "j1", "r", run="b")
    assert box.take("j1") is None  # run a's record is not run b's stored one
    box._on_msg(_Msg(lay.early_subject(box.token, "j1", "w1", "b"), b"run-b"))
    assert box.take("j1") == b"run-b"


def test_the_runs_of_one_job_kept_apart_are_bounded():
    from naq_nb.client.inbox import MAX_EARLY_RUNS

    box, lay = _early_box()
    for i in range(MAX_EARLY_RUNS + 3):
        box._on_msg(_Msg(lay.early_subject(box.token, "j1", "w1", f"r{i}"), b"x" * 10))
    assert len(box._unproven["j1"]) == MAX_EARLY_RUNS and box._unproven_bytes == 10 * MAX_EARLY_RUNS
    box.deliver("j1", b"")
    assert not box._unproven and box._unproven_bytes == 0
