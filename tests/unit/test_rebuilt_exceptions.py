"""A failed job's exception as the reader gets it: its own type and a JobExecutionError, with what
its constructor set kept (the message naq's `except JobExecutionError as e: print(e)` shows)."""

import pytest

from naq_nb.core.errors import DependencyFailedError, JobExecutionError
from naq_nb.core.records import _as_job_error, rebuild_exception
from naq_nb.core.serialization import get_serializer


class TwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__(a, b)
        self.a = a


def raised(fn):
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("did not raise")


CASES = [
    lambda: b"\xff".decode(),
    lambda: compile("x = (", "job.py", "exec"),
    lambda: open("/nonexistent/naq-file"),
    lambda: {}["key"],
    lambda: (_ for _ in ()).throw(ValueError("bad")),
    lambda: (_ for _ in ()).throw(TwoArgs(1, 2)),
]


@pytest.mark.parametrize("make", CASES, ids=["unicode", "syntax", "oserror", "keyerror", "value", "two-args"])
def test_a_rebuilt_exception_keeps_its_message_and_fields(make):
    original = raised(make)
    payload = get_serializer("pickle").dumps_exception(original)
    meta = {"status": "failed", "ser": "pickle", "exc_type": type(original).__qualname__, "traceback": "tb"}
    exc = rebuild_exception(meta, payload)
    assert isinstance(exc, type(original)) and isinstance(exc, JobExecutionError)
    assert str(exc) == str(original) and str(exc)
    assert exc.args == original.args
    for field in ("filename", "msg", "lineno", "reason", "start", "a"):
        if hasattr(original, field):
            assert getattr(exc, field) == getattr(original, field), field
    assert exc.remote_traceback == "tb"


def test_a_failed_dependency_is_a_job_execution_error():
    exc = rebuild_exception({"status": "failed", "dependency": "dep-1", "error": "dep failed"}, b"")
    assert isinstance(exc, DependencyFailedError) and isinstance(exc, JobExecutionError)


def test_an_exception_whose_constructor_takes_other_arguments_still_rebuilds():
    class Odd(Exception):
        def __init__(self, code):
            super().__init__(f"code {code}")  # args differ from what the constructor takes
            self.code = code

    rebuilt = _as_job_error(Odd(7), "Odd", "")
    assert isinstance(rebuilt, Odd) and isinstance(rebuilt, JobExecutionError)
    assert str(rebuilt) == "code 7" and rebuilt.code == 7


def test_the_errors_the_readme_names_come_from_the_package():
    import re
    from pathlib import Path

    import naq_nb
    from naq_nb.core import errors

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    named = set(re.findall(r"`([A-Z][A-Za-z]+Error)`", readme)) & set(errors.__all__)
    assert {"DuplicateJobError", "ConcurrentUpdateError", "PublishTimeoutError"} <= named
    for name in named:
        assert getattr(naq_nb, name) is getattr(errors, name), name
