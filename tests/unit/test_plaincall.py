"""Which pickled calls a worker may decode itself (no code runs while unpickling them)."""

import functools
import pickle

import pytest

from naq_nb.core.plaincall import is_plain_call
from naq_nb.core.serialization import get_serializer

import jobs

SER = get_serializer("pickle")
ONCE = SER.batch_dumps_call(functions_once=True)  # how Queue.enqueue pickles the function


class _Obj:
    pass


@pytest.mark.parametrize("dumps", [SER.dumps_call, ONCE], ids=["direct", "function_once"])
def test_plain_arguments_and_the_named_function_pass(dumps):
    body = dumps(jobs.async_add, (1, "x", 2.5, None, True, b"z", [1, (2,)], {"a": {3}}, frozenset()), {"k": -1})
    assert is_plain_call(body, "jobs.async_add")
    assert not is_plain_call(body, "jobs.add")  # another name: the global is not the one the job names


@pytest.mark.parametrize("dumps", [SER.dumps_call, ONCE], ids=["direct", "function_once"])
@pytest.mark.parametrize("fn, args, name", [
    (jobs.async_add, (_Obj(), 1), "jobs.async_add"),  # an object argument (pickled by value)
    (jobs.async_add, (jobs.ExitWhenUnpickled(), 1), "jobs.async_add"),  # its unpickling calls sys.exit
    (jobs.async_add, (functools.partial(int, 1), 1), "jobs.async_add"),
    (functools.partial(jobs.async_add, 1), (1,), "functools.partial"),  # a name many calls share
    (lambda: 1, (), "test_plaincall.<lambda>"),  # pickled by value
], ids=["object", "exits", "partial_arg", "partial", "lambda"])
def test_anything_that_runs_code_while_unpickled_does_not(dumps, fn, args, name):
    assert not is_plain_call(dumps(fn, args, {}), name)


def test_a_forged_pickle_naming_the_function_but_loading_another_global_does_not_pass():
    # the strings "jobs", "async_add" are pushed, but STACK_GLOBAL takes two memoized ones (os.system)
    forged = b"\x80\x05\x8c\x02os\x94\x8c\x06system\x94\x8c\x04jobs\x8c\tasync_add\x94h\x00h\x01\x93."
    assert not is_plain_call(forged, "jobs.async_add")
    assert not is_plain_call(b"not a pickle", "jobs.async_add")
    wrapped_more = pickle.dumps((pickle.loads, pickle.dumps((jobs.async_add, _Obj))))
    assert not is_plain_call(wrapped_more, "jobs.async_add")


def test_a_kept_verdict_is_per_body_and_function_name():
    # Small bodies' verdicts are kept (a no-argument call repeats): asked again, in either order, each
    # pair still gets its own answer, and a body that runs code stays refused.
    plain = SER.dumps_call(jobs.async_add, (1, 2), {})
    runs_code = SER.dumps_call(jobs.async_add, (jobs.ExitWhenUnpickled(), 1), {})
    assert len(plain) < 512 and len(runs_code) < 512
    for _ in range(2):
        assert is_plain_call(plain, "jobs.async_add")
        assert not is_plain_call(plain, "jobs.add")
        assert not is_plain_call(runs_code, "jobs.async_add")
