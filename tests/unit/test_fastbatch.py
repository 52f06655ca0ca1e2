"""How a fast-ingest batch reads the server's frames (no server: the frames are fed as a server sends
them, shapes taken from nats-server 2.15): only the batch's count says where the stored part ends."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from naq_nb.core.fastbatch import FastBatch


def _batch(sent: int) -> FastBatch:
    broker = SimpleNamespace(nc=SimpleNamespace(new_inbox=lambda: "_INBOX.test"), publish_timeout=0.2)
    fb = FastBatch(broker, "test batch")  # type: ignore[arg-type]
    fb.sent = sent
    return fb


def _outcome(sent: int, *frames: dict) -> tuple[int, bool]:
    async def main() -> tuple[int, bool]:
        fb = _batch(sent)
        for f in frames:
            await fb._on_frame(SimpleNamespace(data=json.dumps(f).encode()))
        return await fb.result()

    return asyncio.run(main())


def test_a_batch_taken_whole_is_stored_whole():
    frames = [{"type": "ack", "seq": 100, "msgs": 100}, {"stream": "S", "seq": 250, "batch": "b", "count": 250}]
    assert _outcome(250, *frames) == (250, True)


def test_after_a_refused_message_the_count_says_what_is_stored():
    refused = {"type": "err", "seq": 31, "error": {"code": 503, "err_code": 10077}}
    assert _outcome(200, refused, {"stream": "S", "seq": 30, "batch": "b", "count": 30}) == (30, True)


def test_a_hole_is_not_read_as_stored_up_to_its_last_seq():
    # The gap frame's last_seq is the first message lost (the server answers count = last_seq - 1).
    hole = {"type": "gap", "last_seq": 3, "seq": 4}
    assert _outcome(5, hole, {"stream": "S", "seq": 2, "batch": "b", "count": 2}) == (2, True)


def test_without_a_count_only_the_flow_acks_count_and_the_rest_is_in_doubt():
    assert _outcome(500, {"type": "ack", "seq": 200, "msgs": 100}, {"type": "err", "seq": 250}) == (200, False)
    # A plain PubAck (a server that stored it as a lone message, not in a batch) is not a batch's count.
    assert _outcome(3, {"stream": "S", "seq": 7}) == (0, False)
    assert _outcome(3, {"error": {"code": 500, "description": "failed"}, "stream": "S", "seq": 0}) == (0, False)
