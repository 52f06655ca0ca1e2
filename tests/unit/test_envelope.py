"""Job message headers (Naq-Meta): bad values are refused by name before anything runs."""

from __future__ import annotations

import json

import pytest

from naq_nb.core.envelope import HEADER_META, decode_meta
from naq_nb.core.errors import SerializationError

from helpers import good_meta


BAD_METAS = {
    "rttl abc": {"rttl": "abc"},
    "id empty": {"id": ""},
    "id wildcard": {"id": ">"},
    "id with dot": {"id": "zz.victim"},
    "id trailing newline": {"id": "abc\n"},
    "queue wildcard": {"q": "*"},
    "timeout NaN": {"timeout": float("nan")},
    "timeout bool": {"timeout": True},
    "timeout negative": {"timeout": -1},
    "retry count str": {"retry": {"max_retries": "3"}},
    "retry delay inf": {"retry": {"max_retries": 2, "delay": float("inf")}},
    "retry unknown key": {"retry": {"max_retries": 1, "forever": True}},
    "retry not object": {"retry": [1, 2]},
    "deps not list": {"deps": "abc"},
    "deps bad id": {"deps": ["a.b"]},
    "deps self": {"deps": ["SELF"]},
    "serializer unknown": {"ser": "marshal"},
    "ts str": {"ts": "yesterday"},
    "name int": {"name": 5},
}

@pytest.mark.parametrize("case", sorted(BAD_METAS))
def test_decode_meta_refuses_bad_values(case):
    over = dict(BAD_METAS[case])
    if over.get("deps") == ["SELF"]:
        over["deps"] = ["j1"]
    with pytest.raises(SerializationError, match="Naq-Meta"):
        decode_meta({HEADER_META: json.dumps(good_meta("j1", **over))})

def test_decode_meta_refuses_non_objects_and_accepts_a_real_job():
    for raw in ("[]", "null", "12", "{", '{"id": NaN}'):
        with pytest.raises(SerializationError):
            decode_meta({HEADER_META: raw})
    with pytest.raises(SerializationError, match="no Naq-Meta"):
        decode_meta(None)
    m = decode_meta({HEADER_META: json.dumps(good_meta("sched-1-1700000000000", timeout=2, rttl=60, due=1.0))})
    assert m.options.timeout == 2.0 and m.options.result_ttl == 60.0


# --- the written-out encodings of enqueue's hot path equal the dict forms they replace ---------------

def _dict_meta(job, ser) -> str:
    meta = {"v": 1, "id": job.job_id, "q": job.queue_name, "fn": job.function_name, "ser": ser.name,
            "ts": job.enqueue_time, **job.options.to_meta()}
    if job.reply:
        meta["rt"] = job.reply
    return json.dumps(meta, separators=(",", ":"))


@pytest.mark.parametrize("opts", [
    {},
    {"timeout": 5, "depends_on": ["a-1", "b_2"], "name": 'quote " and \\ and ü', "result_ttl": 60},
    {"max_retries": 3, "retry_delay": [1, 2.5]},
])
def test_encoded_meta_header_is_the_json_of_the_meta_dict(opts):
    import operator
    from naq_nb.core.envelope import encode_job
    from naq_nb.core.job import JobOptions
    from naq_nb.core.queue import make_job
    from naq_nb.core.serialization import get_serializer
    ser = get_serializer("pickle")
    job = make_job(operator.add, (1, 2), None, JobOptions.build(**opts), queue="q-1")
    headers, _ = encode_job(job, ser, max_payload=1 << 20)
    assert headers[HEADER_META] == _dict_meta(job, ser)
    assert decode_meta(headers).options == JobOptions.build(**opts, queue="q-1", job_id=job.job_id)
    job.enqueue_time = 17  # an int, or a float that is not finite, takes json.dumps' own path
    assert encode_job(job, ser, max_payload=1 << 20)[0][HEADER_META] == _dict_meta(job, ser)
    job.reply = "0123abcd"  # a client's result inbox (client/inbox.py)
    headers, _ = encode_job(job, ser, max_payload=1 << 20)
    assert headers[HEADER_META] == _dict_meta(job, ser)
    assert decode_meta(headers).reply == "0123abcd"


@pytest.mark.parametrize("deps,name,args,rt", [
    ([], None, "", None), (["x", "y-2"], 'n "ü"', "1, 'a', x=list[3]", "0123abcd"),
])
def test_encoded_first_record_is_encode_status_of_first_record(deps, name, args, rt):
    from naq_nb.core.status import encode_first_record, encode_status, first_record
    fields = dict(func="m.f", name=name, enqueued_at=1700000000.25, depends_on=deps, args=args)
    if rt:
        fields["rt"] = rt
    fast = json.loads(encode_first_record("j1", "q", "waiting", **fields))
    slow = json.loads(encode_status(first_record("j1", "q", "waiting", **fields)))
    assert abs(fast.pop("updated_at") - slow.pop("updated_at")) < 60
    assert list(fast.items()) == list(slow.items())


def test_a_retry_policy_checked_once_is_reused_but_never_stands_in_for_a_bad_one():
    def retry(**r):
        return decode_meta({HEADER_META: json.dumps(good_meta("j1", retry=r))}).retry

    first, again = retry(max_retries=1, delay=2), retry(max_retries=1, delay=2)
    assert first is again and first.max_retries == 1 and first.delay == 2.0
    # Equal to the cached {"max_retries": 1} as dicts (True == 1), still refused: booleans are not counts.
    with pytest.raises(SerializationError, match="max_retries"):
        retry(max_retries=True, delay=2)
    assert retry(max_retries=1, delay=2.0).delay == 2.0
