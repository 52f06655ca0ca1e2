"""Signed records and JSON mode's allow-list, and settings that never show a secret."""

from __future__ import annotations

import json

import pytest

from naq_nb.core.errors import SerializationError, SignatureError
from naq_nb.core.serialization import JsonSerializer, PickleSerializer, pack_record, seal_record
from naq_nb.core.settings import Settings

import sec_jobs

KEY = b"k-2026-new"
SECRET = "hunter2-very-secret"


def test_signature_binds_every_part():
    from naq_nb.core.serialization import open_record, sign_job, verify_job
    sig = sign_job(KEY, "j1", '{"id":"j1"}', b"body")
    verify_job((b"old", KEY), "j1", '{"id":"j1"}', b"body", sig)
    for args in (("j2", '{"id":"j1"}', b"body"), ("j1", '{"id":"j2"}', b"body"), ("j1", '{"id":"j1"}', b"bodx")):
        with pytest.raises(SignatureError):
            verify_job(KEY, *args, sig)
    rec = seal_record(pack_record({"status": "succeeded"}, b"v"), "j1", KEY)
    assert open_record(rec, "j1", KEY) == ({"status": "succeeded", "sig": json.loads(rec.split(b"\n")[0])["sig"]}, b"v")
    tampered = rec.replace(b'"succeeded"', b'"failed"   ')
    with pytest.raises(SignatureError):
        open_record(tampered, "j1", KEY)

def _json_call(path: str, *args) -> bytes:
    return json.dumps({"func": path, "args": list(args), "kwargs": {}}).encode()

def test_json_without_allow_list_refuses_stdlib_and_says_what_it_allows(tmp_path, caplog):
    import naq_nb.core.serialization as ser_mod
    ser_mod._warned = False
    marker = tmp_path / "pwned"
    ser = JsonSerializer()
    with caplog.at_level("WARNING", logger="naq_nb"):
        for path in ("os:system", "subprocess:call", "builtins:eval", "naq_nb.cli.main:main", "posix:system"):
            with pytest.raises(SerializationError, match="not allowed"):
                ser.loads_call(_json_call(path, f"touch {marker}"))
        fn, args, _ = ser.loads_call(_json_call("sec_jobs:touch", str(marker)))
    assert fn is sec_jobs.touch and not marker.exists()
    warnings = [r for r in caplog.records if "NAQ_JSON_ALLOWED" in r.getMessage()]
    assert len(warnings) == 1 and "standard library" in warnings[0].getMessage()
    with pytest.raises(SerializationError, match="not allowed"):
        ser.loads_call(_json_call("sec_jobs:system", f"touch {marker}"))  # imported from os, not defined there

def test_json_allow_list_has_no_attribute_walking(tmp_path):
    marker = tmp_path / "pwned"
    mod_entry = JsonSerializer(("sec_jobs",))
    for path in ("sec_jobs:os.system", "sec_jobs.os:system", "sec_jobs:system", "sec_jobs:Path.touch", "os:system"):
        with pytest.raises(SerializationError, match="not allowed"):
            mod_entry.loads_call(_json_call(path, f"touch {marker}"))
    assert mod_entry.loads_call(_json_call("sec_jobs:touch", "x"))[0] is sec_jobs.touch
    exact = JsonSerializer(("sec_jobs:append_line",))
    assert exact.loads_call(_json_call("sec_jobs:append_line", "x"))[0] is sec_jobs.append_line
    with pytest.raises(SerializationError, match="not allowed"):
        exact.loads_call(_json_call("sec_jobs:touch", "x"))
    with pytest.raises(SerializationError, match="must be 'package.module'"):
        JsonSerializer(("sec_jobs:os.system",))
    with pytest.raises(SerializationError, match="not allowed"):  # refused at enqueue too
        exact.dumps_call(sec_jobs.touch, ("x",), {})
    assert not marker.exists()

def test_settings_repr_hides_keys_passwords_and_url_credentials():
    s = Settings.from_env(environ={"NAQ_SIGNING_KEY": SECRET, "NAQ_SIGNING_KEYS": f"{SECRET}x,{SECRET}y",
                                   "NAQ_NATS_URL": f"nats://alice:{SECRET}@h1:4222,nats://{SECRET}@h2:4222"},
                          nats_options={"password": SECRET, "token": SECRET, "name": "visible"})
    text = repr(s)
    assert SECRET not in text and "visible" in text and "h1:4222" in text and "h2:4222" in text


def test_batch_dumps_call_gives_each_call_the_bytes_dumps_call_gives():
    """One pickler reused over a batch (enqueue_many) must not let one body depend on the previous."""
    import operator
    import threading
    from naq_nb.core.serialization import get_serializer
    ser = get_serializer("pickle")
    big = list(range(50))

    def closure(x):
        return x + len(big)
    calls = [(operator.add, (1, 2), {}), (lambda x: x * 2, (big,), {}), (closure, (big,), {"k": big}),
             (operator.add, (big, big), {}), ("operator:sub", (), {}), (closure, (3,), {})]
    dumps = ser.batch_dumps_call()
    for fn, args, kwargs in calls:
        body = dumps(fn, args, kwargs)
        assert body == ser.dumps_call(fn, args, kwargs)
        fn2, args2, kwargs2 = ser.loads_call(body)
        assert (args2, kwargs2) == (args, kwargs)
    with pytest.raises(SerializationError, match="argument 0"):
        dumps(operator.add, (threading.Lock(),), {})
    assert dumps(operator.add, (1, 2), {}) == ser.dumps_call(operator.add, (1, 2), {}), "usable after a failure"


class _CountedCall:
    """A callable that counts how often it is pickled."""
    reductions = 0

    def __call__(self, x):
        return x + 1

    def __reduce__(self):
        type(self).reductions += 1
        return (_CountedCall, ())


def test_batch_dumps_call_with_functions_once_pickles_each_function_once():
    import operator
    import pickle
    from naq_nb.core.serialization import get_serializer
    ser = get_serializer("pickle")
    scale = 3
    lam = lambda x: x * scale  # noqa: E731  (a notebook-style function: pickled by value)
    counted = _CountedCall()
    dumps = ser.batch_dumps_call(functions_once=True)
    bodies = [dumps(fn, (i,), {"k": i} if fn is lam else {}) for i in range(3) for fn in (lam, counted, "operator:mul")]
    assert _CountedCall.reductions == 1, "pickled once for the batch"
    for i, fn_name in ((0, "lam"), (1, "counted"), (2, "path")):
        fn, args, kwargs = ser.loads_call(bodies[i])
        if fn_name == "lam":
            assert fn(*args) == 0 and kwargs == {"k": 0}
        elif fn_name == "counted":
            assert fn(*args) == 1 and kwargs == {}
        else:
            assert fn is operator.mul  # a function by name: imported where the call is decoded
    fn, args, _ = ser.loads_call(bodies[3])  # later bodies carry the same function
    assert fn(*args) == 3
    with pytest.raises(SerializationError, match="cannot pickle"):
        dumps(lambda: pickle, (_Unpicklable(),), {})


class _Unpicklable:
    def __reduce__(self):
        raise TypeError("no")


@pytest.mark.parametrize(
    "value", [None, True, False, 0, -1, 2**70, 1.5, float("nan"), 1 + 2j, "", "é" * 300, b"", b"\x00" * 70_000]
)
def test_a_plain_value_is_stored_as_cloudpickle_would_store_it(value):
    # dumps_value skips cloudpickle's Pickler for plain scalars: a reader must not tell the difference.
    import pickle

    import cloudpickle

    data = PickleSerializer().dumps_value(value)
    assert data == cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    back = PickleSerializer().loads_value(data)
    assert type(back) is type(value) and (back == value or value != value)


def test_a_scalar_subclass_still_goes_through_cloudpickle():
    class Mine(int):  # a local class: only cloudpickle can store it by value
        pass

    back = PickleSerializer().loads_value(PickleSerializer().dumps_value(Mine(3)))
    assert back == 3 and type(back).__name__ == "Mine"
