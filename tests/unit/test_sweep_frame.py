"""A sweep frame's column names: each used once, whatever the parameters and results are called."""

from naq_nb.notebook.sweep_frame import _Columns


def test_a_name_taken_twice_over_gets_a_numbered_suffix():
    names = _Columns(["x", "result.x", "result.x~2"])
    assert names.cells({"x": 1}) == [("result.x~3", 1)]
    assert names.cells({"x": 2, "y": 3}) == [("result.x~3", 2), ("y", 3)]  # the same key, the same column


def test_keys_with_one_str_get_their_own_columns_and_keep_them():
    names = _Columns([])
    assert names.cells({1: "a", "1": "b", True: "c"}) == [("1", "c"), ("result.1", "b")]  # noqa: F601 (True is 1)
    assert names.cells({"1": "d"}) == [("result.1", "d")]
    assert names.cells(5) == [("result", 5)] and names.cells({}) == [("result", {})]


def test_job_columns_a_parameter_takes_are_prefixed():
    names = _Columns(["status", "job_id"])
    assert names.fixed == {"status": "job.status", "duration": "duration", "attempts": "attempts",
                           "error": "error", "job_id": "job.job_id"}


def test_without_pandas_a_frame_says_which_extra_brings_it(monkeypatch):
    import sys

    import pytest

    from naq_nb.notebook.frames import _frame
    from naq_nb.notebook.sweep_frame import sweep_frame

    monkeypatch.setitem(sys.modules, "pandas", None)  # what `import pandas` meets on a plain install
    with pytest.raises(ModuleNotFoundError, match=r"nq\.jobs\(\).*pip install 'naq_nb\[notebook\]'") as e:
        _frame([], ["status"])
    assert e.value.name == "pandas"
    with pytest.raises(ModuleNotFoundError, match=r"sweep's DataFrame needs pandas.*naq_nb\[notebook\]"):
        sweep_frame([], [])
