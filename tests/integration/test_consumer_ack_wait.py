"""A queue's consumer keeps the ack_wait it was made with; a worker whose NAQ_ACK_WAIT is longer
must still tell the server a running job is alive within the consumer's, or the job runs twice."""

import logging

from naq_nb.core.queue import Queue
from naq_nb.core.results import wait_for_result

import jobs


async def test_a_worker_keeps_a_long_job_alive_within_its_consumers_shorter_ack_wait(
        broker, settings, start_worker, tmp_path, caplog):
    await broker.ensure_consumer("default")  # made with the fixture's ack_wait, 5 s
    info = await broker.js.consumer_info(broker.layout.jobs_stream, broker.layout.consumer_name("default"))
    assert info.config.ack_wait == 5.0
    runs = tmp_path / "runs"
    caplog.set_level(logging.WARNING, logger="naq_nb")
    for _ in range(2):  # a redelivery could go to the idle one
        await start_worker(settings=settings.with_(ack_wait=60.0))
    j = await Queue(broker).enqueue(jobs.mark, str(runs), "x", 8.0)  # runs past the consumer's ack_wait
    assert (await wait_for_result(broker, j.job_id, 60)).unwrap() == "x"
    assert runs.read_text().splitlines() == ["x"], "the job ran more than once"
    info = await broker.js.consumer_info(broker.layout.jobs_stream, broker.layout.consumer_name("default"))
    assert info.num_redelivered == 0, "the job was redelivered while it ran"
    assert not [r for r in caplog.records if "redelivered" in r.getMessage()], caplog.text
    said = [r.getMessage() for r in caplog.records if "NAQ_ACK_WAIT" in r.getMessage()]
    assert len(said) == 1 and "60s" in said[0] and "5s" in said[0], said
