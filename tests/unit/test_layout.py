"""Every NATS name comes from the prefix, so prefixes share one server without meeting (the test
suite itself relies on it: one nats-server per session, one NAQ_PREFIX per test)."""

from __future__ import annotations

import pytest

from naq_nb.core.errors import UnknownQueueError
from naq_nb.core.layout import Layout


def names(lay: Layout) -> dict[str, str]:
    """Every stream, bucket, object store, consumer and subject name the layout hands out."""
    q = "default"
    out = {
        "jobs_stream": lay.jobs_stream, "failed_stream": lay.failed_stream, "waiting_stream": lay.waiting_stream,
        "waiting_subject": lay.waiting_subject("*"), "queue_subject": lay.queue_subject(q),
        "failed_subject": lay.failed_subject(q), "cancel_subject": lay.cancel_subject,
        "consumer": lay.consumer_name(q),
    }
    for bucket in [*lay.buckets(), *lay.object_buckets()]:
        out[f"bucket {bucket}"] = bucket
        out[f"kv stream {bucket}"] = lay.kv_stream(bucket)
        out[f"kv subject {bucket}"] = lay.kv_subject(bucket, "k")
    for cfg in (lay.jobs_stream_config(), lay.failed_stream_config(), lay.waiting_stream_config()):
        out[f"stream {cfg.name}"] = cfg.name
        for i, subj in enumerate(cfg.subjects or []):
            out[f"stream {cfg.name} subject {i}"] = subj
    cc = lay.consumer_config(q)
    out["consumer durable"], out["consumer filter"] = cc.durable_name, cc.filter_subject
    return out


def test_every_name_carries_the_prefix():
    for key, name in names(Layout(prefix="t7x")).items():
        assert "t7x" in name.lower(), f"{key}: {name!r} ignores the prefix"


@pytest.mark.parametrize("a, b", [("naq", "t1x"), ("t1x", "t10x"), ("app", "app2")])
def test_two_prefixes_share_no_name_and_no_subject_space(a, b):
    la, lb = names(Layout(prefix=a)), names(Layout(prefix=b))
    assert not set(la.values()) & set(lb.values())
    # Stream subjects must not overlap either, or JetStream refuses the second stream.
    first_tokens = {n.split(".")[0] for k, n in la.items() if "subject" in k and not n.startswith("$KV.")}
    assert first_tokens == {a}
    assert all(not n.startswith(f"{a}.") for k, n in lb.items() if "subject" in k)


def test_default_prefix_names_are_naqs():
    lay = Layout()
    assert (lay.jobs_stream, lay.status_bucket, lay.queue_subject("q"), lay.consumer_name("q")) == (
        "NAQ_JOBS", "naq_status", "naq.jobs.q", "naq_q_q")


def test_queue_names_that_are_no_subject_token_are_refused_by_name():
    lay = Layout()
    for bad in ("a.b", "*", ">", "", "q\n", "a b"):
        with pytest.raises(UnknownQueueError, match="invalid queue name"):
            lay.queue_subject(bad)


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


def test_a_copied_acknowledgement_reaches_both_its_writer_and_the_jobs_client_only():
    lay = Layout()
    ack = lay.early_ack_head("tok1", "job-1", "r", "w1", "c0ffee") + ".42"
    assert _matches(lay.early_ack_pattern("w1"), ack) and _matches(lay.reply_inbox("tok1"), ack)
    assert not _matches(lay.early_ack_pattern("w2"), ack) and not _matches(lay.reply_inbox("tok2"), ack)
    assert lay.reply_parts(ack) == ("job-1", "r", "w1.c0ffee")
    early = lay.early_subject("tok1", "job-1", "w1", "c0ffee")
    assert _matches(lay.reply_inbox("tok1"), early) and lay.reply_parts(early) == ("job-1", "v", "w1.c0ffee")
    assert lay.reply_parts(lay.reply_subject("tok1", "job-1") + ".v.w1") is None  # a run is always named
    assert lay.reply_parts(lay.reply_subject("tok1", "job-1")) == ("job-1", "", "")
    assert not _matches(lay.early_ack_pattern("w1"), early)  # its own record does not come back to the writer
