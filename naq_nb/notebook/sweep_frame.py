"""A sweep's DataFrame: one row per point, its parameters, its result, its job's outcome.

Every column name is used once, so no value is dropped for a clash: parameters keep their
names; a job column (status, duration, ...) a parameter's name takes gets a ``job.`` prefix; a
result's key gets a ``result.`` prefix where its name is taken, and ``~2``, ``~3``... after that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ..client.future import JobFuture
from ..core.status import FAILED_STATES, TERMINAL_VALUES, JobStatus
from . import needs

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["sweep_frame"]

_JOB_COLUMNS = ("status", "duration", "attempts", "error", "job_id")


def sweep_frame(points: Sequence[dict], futures: Sequence[JobFuture]) -> "pd.DataFrame":
    """The DataFrame of a sweep's ``points`` and their ``futures`` (see :meth:`Sweep.to_dataframe`)."""
    pd = needs.pandas("a sweep's DataFrame")

    n = len(points)
    params = list(points[0]) if points else []
    names = _Columns(params)
    # Built column by column (lists, not one dict per row): 10,000 points take milliseconds.
    cols: dict[str, list] = {k: [p[k] for p in points] for k in params}
    extra: dict[str, list] = {}
    out: dict[str, list] = {k: [None] * n for k in _JOB_COLUMNS}
    for i, f in enumerate(futures):
        ok, value = _succeeded_value(f)
        if ok:
            for col, v in names.cells(value):
                if col not in extra:
                    extra[col] = [None] * n
                extra[col][i] = v
        rec, status = f.record, f.status
        out["status"][i], out["duration"][i], out["attempts"][i] = status, f.duration, rec.get("attempts")
        out["error"][i] = rec.get("error") if status in FAILED_STATES else _follow_error(f)
        out["job_id"][i] = f.job_id
    job = {names.fixed[k]: v for k, v in out.items()}
    return pd.DataFrame({**cols, **extra, **job}, columns=params + list(extra) + list(job))


def _follow_error(f: JobFuture) -> str | None:
    """Why a point that did not fail has no value: its future stopped following the job (its client
    closed, its cluster replaced), which says how to follow it again; or it succeeded, but its result
    expired or was deleted (a row saying 'succeeded' with no result and no error said nothing)."""
    if not f.done() or f.cancelled():
        return None
    if f.status in TERMINAL_VALUES and f.status != JobStatus.SUCCEEDED.value:
        return None
    exc = f.exception(0)
    return None if exc is None else f"{type(exc).__name__}: {exc}"


def _succeeded_value(f: JobFuture) -> tuple[bool, Any]:
    """``(True, value)`` for a point that succeeded, else ``(False, None)``."""
    if not f.done() or f.cancelled() or f.exception(0) is not None:
        return False, None
    return True, f.result(0)


class _Columns:
    """The frame's column names, each used once (the module's rule); ``{1: .., "1": ..}`` are two
    keys, so two columns."""

    def __init__(self, params: list[str]) -> None:
        self.taken = set(params)
        self.fixed = {f: self._free(f, "job.") for f in _JOB_COLUMNS}
        self._of_key: dict[Any, str] = {}
        self._result: str | None = None  # the column of results that are not dicts

    def _free(self, name: str, prefix: str) -> str:
        col = name if name not in self.taken else f"{prefix}{name}"
        n, base = 2, col
        while col in self.taken:
            col, n = f"{base}~{n}", n + 1
        self.taken.add(col)
        return col

    def cells(self, value: Any) -> list[tuple[str, Any]]:
        """A dict result as its columns, anything else as the ``result`` column."""
        if not (isinstance(value, dict) and value):
            if self._result is None:
                self._result = self._free("result", "result.")
            return [(self._result, value)]
        out = []
        for k, v in value.items():
            key = (type(k), k)  # 1 and "1" (and 1 and True) are different keys with one str()
            col = self._of_key.get(key)
            if col is None:
                col = self._of_key[key] = self._free(str(k), "result.")
            out.append((col, v))
        return out
