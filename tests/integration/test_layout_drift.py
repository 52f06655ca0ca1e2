"""A TTL setting that differs from its existing bucket is said, never silently dropped, and
`naq layout --apply` makes the buckets follow it."""

import logging

from naq_nb.core.broker import Broker

from test_cli import naq

LOGGER = "naq_nb.core.drift"


async def _connect(settings) -> Broker:
    b = await Broker.connect(settings=settings)
    await b.ensure_layout()
    return b


async def _max_age(broker, bucket) -> float:
    return (await broker.js.stream_info(broker.layout.kv_stream(bucket))).config.max_age


async def test_a_ttl_setting_unlike_its_bucket_is_said_and_the_bucket_kept(broker, settings, caplog):
    # `broker` made the buckets with the defaults; a process set to keep results 60 s connects.
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        other = await _connect(settings.with_(result_ttl=60.0))
    try:
        said = [r.getMessage() for r in caplog.records if r.name == LOGGER]
        assert len(said) == 1, said
        assert "NAQ_RESULT_TTL is 60s" in said[0] and "86400s" in said[0] and "naq layout --apply" in said[0]
        assert await _max_age(other, other.layout.results_bucket) == 86400.0  # another process's choice stays
    finally:
        await other.close()


async def test_a_process_left_at_the_defaults_says_nothing_of_a_chosen_ttl(settings, caplog):
    first = await _connect(settings.with_(result_ttl=60.0))
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            defaults = await _connect(settings)
        await defaults.close()
        assert not [r for r in caplog.records if r.name == LOGGER]
        assert await _max_age(first, first.layout.results_bucket) == 60.0
    finally:
        await first.close()


async def test_worker_records_shorter_than_a_heartbeat_are_said_even_at_the_defaults(settings, caplog):
    first = await _connect(settings.with_(worker_ttl=2.0, heartbeat_interval=1.0))
    await first.close()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        b = await _connect(settings.with_(worker_ttl=30.0, heartbeat_interval=5.0))
    await b.close()
    said = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(said) == 1 and "vanish" in said[0] and "NAQ_HEARTBEAT (5s)" in said[0], said


async def test_naq_layout_shows_the_difference_and_apply_sets_it(broker, nats_server, settings):
    env = {"NAQ_RESULT_TTL": "30", "NAQ_ACK_WAIT": "20", "NAQ_PREFIX": settings.prefix}
    await (await broker.kv(broker.layout.results_bucket)).put("kept", b"x")
    consumer = await broker.ensure_consumer("default")  # made with the fixture's ack_wait, 5 s
    out = naq("layout", url=nats_server.url, env=env)
    assert out.returncode == 0, out.stderr
    line = next(s for s in out.stdout.splitlines() if broker.layout.results_bucket in s)
    assert "NAQ_RESULT_TTL" in line and "86400s" in line and "30s" in line and "differs" in line, out.stdout
    line = next(s for s in out.stdout.splitlines() if consumer in s)
    assert "NAQ_ACK_WAIT" in line and "5s" in line and "20s" in line and "differs" in line, out.stdout
    assert await _max_age(broker, broker.layout.results_bucket) == 86400.0  # showing changes nothing

    out = naq("layout", "--apply", url=nats_server.url, env=env)
    assert out.returncode == 0, out.stderr
    assert "age limit 86400s -> 30s (NAQ_RESULT_TTL)" in out.stdout, out.stdout
    assert f"consumer {consumer}: ack_wait 5s -> 20s (NAQ_ACK_WAIT)" in out.stdout, out.stdout
    assert (await broker.js.consumer_info(broker.layout.jobs_stream, consumer)).config.ack_wait == 20.0
    cfg = (await broker.js.stream_info(broker.layout.kv_stream(broker.layout.results_bucket))).config
    assert cfg.max_age == 30.0 and cfg.duplicate_window <= 30.0  # the server refuses a longer window
    kept = await (await broker.kv(broker.layout.results_bucket)).get("kept")
    assert kept.value == b"x"  # the bucket still works, its entries kept
    status = broker.layout.kv_stream(broker.layout.status_bucket)
    assert (await broker.js.stream_info(status)).config.max_age == 604800.0  # only what differed

    out = naq("layout", url=nats_server.url, env=env)
    assert "differs" not in out.stdout, out.stdout


async def test_one_setting_unlike_three_streams_is_said_once(broker, settings, caplog):
    # NAQ_STATUS_TTL sets the status and meta buckets and the waiting stream.
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        other = await _connect(settings.with_(status_ttl=3600.0, result_ttl=3600.0))
    await other.close()
    said = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert sum("NAQ_STATUS_TTL is 3600s" in m for m in said) == 1, said
    assert sum("NAQ_RESULT_TTL is 3600s" in m for m in said) == 1 and len(said) == 2, said


async def test_more_replicas_than_the_streams_have_is_said_and_a_single_server_refuses_them(
        broker, nats_server, settings, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        other = await _connect(settings.with_(replicas=3))
    await other.close()
    said = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(said) == 1 and "NAQ_REPLICAS is 3" in said[0] and "1 replica(s)" in said[0], said

    env = {"NAQ_REPLICAS": "3", "NAQ_PREFIX": settings.prefix}
    out = naq("layout", "--apply", url=nats_server.url, env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    refusal = next(s for s in out.stderr.splitlines() if broker.layout.jobs_stream in s)
    assert "replicas stays 1: the server refused 3" in refusal, out.stderr
    assert (await broker.js.stream_info(broker.layout.jobs_stream)).config.num_replicas == 1
