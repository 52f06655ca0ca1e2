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


def test_a_retry_policy_checked_once_is_reused_but_never_stands_in_for_a_bad_one():
    def retry(**r):
        return decode_meta({HEADER_META: json.dumps(good_meta("j1", retry=r))}).retry

    first, again = retry(max_retries=1, delay=2), retry(max_retries=1, delay=2)
    assert first is again and first.max_retries == 1 and first.delay == 2.0
    # Equal to the cached {"max_retries": 1} as dicts (True == 1), still refused: booleans are not counts.
    with pytest.raises(SerializationError, match="max_retries"):
        retry(max_retries=True, delay=2)
    assert retry(max_retries=1, delay=2.0).delay == 2.0
