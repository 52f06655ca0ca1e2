"""Retry policies, job options, settings and naq's environment variables: checked without a server."""

from __future__ import annotations

import warnings

import pytest

from naq_nb.core.errors import ConfigurationError
from naq_nb.core.job import JobOptions
from naq_nb.core.retry import RetryPolicy
from naq_nb.core.settings import Settings


def test_backoff_kinds():
    assert [RetryPolicy(5, "fixed", 2).delay_for(n) for n in (1, 2, 3)] == [2, 2, 2]
    assert [RetryPolicy(5, "linear", 2).delay_for(n) for n in (1, 2, 3)] == [2, 4, 6]
    assert [RetryPolicy(5, "exponential", 1, max_delay=3).delay_for(n) for n in (1, 2, 3)] == [1, 2, 3]
    assert [RetryPolicy(5, (1, 5)).delay_for(n) for n in (1, 2, 3)] == [1, 5, 5]
    d = RetryPolicy(5, "fixed", 10, jitter=0.5).delay_for(1)
    assert 5 <= d <= 15

def test_retry_policy_ignore_on_unit():
    p = RetryPolicy(max_retries=3, retry_on=(Exception,), ignore_on=("ValueError",))
    assert not p.should_retry(1, ["naq_nb.SomeError", "ValueError"])   # a subclass of ValueError
    assert p.should_retry(1, ["ConnectionError", "OSError", "Exception"])
    assert RetryPolicy.from_dict(p.to_dict()) == p
    with pytest.raises(ConfigurationError, match="ignore_on"):
        RetryPolicy(ignore_on=(42,))

def test_unknown_option_raises_with_suggestion():
    with pytest.raises(TypeError, match="unknown job option 'timout'.*did you mean 'timeout'"):
        JobOptions.build(timout=3)

def test_bad_settings_values():
    with pytest.raises(ValueError, match="NAQ_ACK_WAIT='soon'"):
        Settings.from_env(environ={"NAQ_ACK_WAIT": "soon"})
    with pytest.raises(ValueError, match="'pickle' or 'json'"):
        Settings.from_env(environ={"NAQ_JOB_SERIALIZER": "yaml"})

def test_a_prefix_whose_names_would_be_another_prefixs_is_refused():
    from naq_nb.core.layout import Layout

    # "<p>_result" + "_objects" is "<p>" + "_result_objects": the two would share an object store.
    assert Layout(prefix="app_result").objects_bucket == Layout(prefix="app").result_objects_bucket
    with pytest.raises(ValueError, match="'app_result' must not end in '_result'.*prefix 'app'"):
        Settings.from_env(environ={"NAQ_PREFIX": "app_result"})
    assert Settings.from_env(environ={"NAQ_PREFIX": "app_results"}).prefix == "app_results"


def test_naq_env_vars_are_aliases():
    env = {"NAQ_DEFAULT_RESULT_TTL": "11", "NAQ_SCHEDULER_LOCK_TTL": "12", "NAQ_WORKER_HEARTBEAT_INTERVAL": "2",
           "NAQ_JOB_STATUS_TTL": "13", "NAQ_DEFAULT_ACK_WAIT": "14"}
    s = Settings.from_env(env)
    assert (s.result_ttl, s.leader_ttl, s.heartbeat_interval, s.status_ttl, s.ack_wait) == (11, 12, 2, 13, 14)
    with pytest.warns(UserWarning, match="NAQ_DEFAULT_ACK_WAIT.*using NAQ_ACK_WAIT"):
        s = Settings.from_env({**env, "NAQ_ACK_WAIT": "15"})
    assert s.ack_wait == 15
    with pytest.raises(ValueError, match="NAQ_JOB_STATUS_TTL='a week'"):
        Settings.from_env({"NAQ_JOB_STATUS_TTL": "a week"})
    with pytest.warns(UserWarning, match="NAQ_ACK_WAIT_PER_QUEUE.*no effect"):
        Settings.from_env({"NAQ_ACK_WAIT_PER_QUEUE": '{"a": 5}'})
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # the same value twice is no conflict
        assert Settings.from_env({"NAQ_ACK_WAIT": "15", "NAQ_DEFAULT_ACK_WAIT": "15"}).ack_wait == 15

def test_naq_log_level_variable(monkeypatch):
    import logging
    from naq_nb.cli.main import log_level
    monkeypatch.setenv("NAQ_LOG_LEVEL", "debug")
    assert log_level(None) == logging.DEBUG and log_level("ERROR") == logging.ERROR
    assert log_level("TRACE") == logging.DEBUG
    monkeypatch.setenv("NAQ_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="NAQ_LOG_LEVEL"):
        log_level(None)


def test_building_with_no_option_gives_the_same_options_and_encodes_them_once():
    base = JobOptions.build(queue="q", timeout=5)
    assert JobOptions.build(base) is base  # a plain enqueue builds no new options
    assert base.meta_json is JobOptions.build(base).meta_json
    changed = JobOptions.build(base, name="n")
    assert changed is not base and changed.name == "n" and base.name is None


def test_exponential_backoff_past_a_thousand_failures_stays_at_its_cap():
    # 2 ** 1024 does not fit a float: the delay once raised OverflowError at failure 1,025.
    from naq_nb.core.retry import RetryPolicy

    p = RetryPolicy(max_retries=1_100, backoff="exponential", delay=0.5, max_delay=60)
    assert [p.delay_for(n) for n in (1, 3, 1_025, 1_000_000)] == [0.5, 2.0, 60, 60]
    assert RetryPolicy(max_retries=1_100, backoff="exponential", delay=0.0, max_delay=0.001).delay_for(2_000) == 0.0


_STATUS_UNDER_RESULT = (
    r"status_ttl \(NAQ_STATUS_TTL, 3600\) must not be shorter than result_ttl \(NAQ_RESULT_TTL, 86400\)"
)


def test_a_status_ttl_shorter_than_the_result_ttl_is_refused_naming_both():
    """A status record (and a job_id/key claim) that expires before the job's result: a dependent
    enqueued then failed as if the job never existed, and the id reused by another call got the old
    result. Refused however the settings are built; an equal TTL is fine."""
    for build in (
        lambda: Settings.from_env({"NAQ_STATUS_TTL": "3600"}),
        lambda: Settings.from_env({"NAQ_STATUS_TTL": "3600", "NAQ_RESULT_TTL": "86400"}),
        lambda: Settings.from_env({}, status_ttl=3600.0),
        lambda: Settings(status_ttl=3600.0),
        lambda: Settings().with_(status_ttl=3600.0),
        lambda: Settings(status_ttl=3600.0, result_ttl=3600.0).with_(result_ttl=86400.0),
    ):
        with pytest.raises(ValueError, match=_STATUS_UNDER_RESULT + ".*raise NAQ_STATUS_TTL or lower NAQ_RESULT_TTL"):
            build()
    with pytest.raises(ValueError, match=r"NAQ_STATUS_TTL, 604800\).*NAQ_RESULT_TTL, 2592000\)"):
        Settings.from_env({"NAQ_RESULT_TTL": str(30 * 86400)})  # results for 30 days: statuses too
    assert Settings.from_env({"NAQ_STATUS_TTL": "60", "NAQ_RESULT_TTL": "60"}).status_ttl == 60
    assert Settings.from_env({"NAQ_RESULT_TTL": "604800"}).result_ttl == 604800  # naq's 7 days (README)
    assert Settings().with_(status_ttl=60.0, result_ttl=30.0).status_ttl == 60


def test_a_short_status_ttl_under_naqs_name_says_which_variable_was_set():
    naqs_name = r".*\(NAQ_JOB_STATUS_TTL is naq's name for NAQ_STATUS_TTL\)"
    with pytest.raises(ValueError, match=_STATUS_UNDER_RESULT + naqs_name):
        Settings.from_env({"NAQ_JOB_STATUS_TTL": "3600"})
    with pytest.raises(ValueError, match=r"NAQ_RESULT_TTL, 2000000\).*NAQ_DEFAULT_RESULT_TTL is naq's name"):
        Settings.from_env({"NAQ_DEFAULT_RESULT_TTL": "2000000"})


@pytest.mark.parametrize("entry", ["Client", "Worker", "naq Worker", "Scheduler", "local", "connect", "naq settings"])
def test_every_entry_point_refuses_a_status_ttl_shorter_than_the_result_ttl(entry, monkeypatch):
    """Each of them reads the environment when called: the error comes from that call, before it
    connects (this tier has no server)."""
    import naq_nb as nq
    from naq_nb.client.client import Client
    from naq_nb.client.services import Worker as NaqWorker
    from naq_nb.client.services import Scheduler as NaqScheduler
    from naq_nb.core.worker import Worker

    monkeypatch.setenv("NAQ_STATUS_TTL", "3600")
    monkeypatch.delenv("NAQ_RESULT_TTL", raising=False)
    monkeypatch.delenv("NAQ_DEFAULT_RESULT_TTL", raising=False)
    calls = {
        "Client": lambda: Client("nats://127.0.0.1:1"),
        "Worker": lambda: Worker("default"),
        "naq Worker": lambda: NaqWorker("default", nats_url="nats://127.0.0.1:1"),
        "Scheduler": lambda: NaqScheduler(nats_url="nats://127.0.0.1:1"),
        "local": lambda: nq.local(workers=0, scheduler=False),
        "connect": lambda: nq.connect("nats://127.0.0.1:1"),
        "naq settings": lambda: __import__("naq_nb.settings", fromlist=["x"]).JOB_STATUS_TTL_SECONDS,
    }
    with pytest.raises(ValueError, match=_STATUS_UNDER_RESULT):
        calls[entry]()
