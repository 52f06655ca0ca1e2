"""A sweep's points: the cartesian product of the keyword lists, or an explicit grid, and the job
options every point runs with; each argument checked, so a bad call raises before anything is sent."""

from __future__ import annotations

import inspect
import itertools
import math
from typing import Any

from ..core.job import JobOptions

__all__ = ["MAX_SWEEP_POINTS", "check_sweep", "job_options"]

#: The most points one sweep takes. Each point holds a few KiB in the notebook (its arguments, its
#: future, its row), so a sweep far beyond this would exhaust memory before its first job was sent.
MAX_SWEEP_POINTS = 1_000_000


def _values(key: str, v: Any) -> list:
    if isinstance(v, (str, bytes, dict, set, frozenset)) or not isinstance(v, (list, tuple, range)):
        if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):  # numpy arrays, pandas Series/Index
            v = v.tolist()
        if not isinstance(v, list):
            raise TypeError(
                f"sweep parameter {key!r} must be a list, tuple or range of values, not "
                f"{type(v).__name__} {v!r} (for one value write {key}=[{v!r}])"
            )
    if len(v) == 0:
        raise ValueError(f"sweep parameter {key!r} has no values: each parameter needs at least one")
    return list(v)


def _grid_points(grid: Any, params: dict[str, Any]) -> list[dict]:
    if grid is not None and params:
        raise ValueError(f"give either grid=[...] or parameter lists ({', '.join(params)}), not both")
    if grid is None and not params:
        raise ValueError("a sweep needs parameters: sweep(fn, lr=[...], depth=[...]) or sweep(fn, grid=[{...}, ...])")
    if grid is None:
        keys = list(params)
        lists = [_values(k, params[k]) for k in keys]
        _check_count(math.prod(map(len, lists)), " x ".join(f"{k}: {len(v):,}" for k, v in zip(keys, lists)))
        return [dict(zip(keys, combo)) for combo in itertools.product(*lists)]
    if isinstance(grid, dict) or not isinstance(grid, (list, tuple)):
        raise TypeError(f"grid must be a list of dicts (one per point), not {type(grid).__name__}")
    if not grid:
        raise ValueError("grid is empty: a sweep needs at least one point")
    _check_count(len(grid), "grid=[...]")
    first = None
    for i, p in enumerate(grid):
        if not isinstance(p, dict):
            raise TypeError(f"grid[{i}] must be a dict of keyword arguments, not {type(p).__name__}: {p!r}")
        bad = [k for k in p if not isinstance(k, str) or not k.isidentifier()]
        if bad:
            raise TypeError(f"grid[{i}] has key {bad[0]!r}: keys are keyword-argument names")
        if first is None:
            first = set(p)
        elif set(p) != first:
            raise ValueError(
                f"grid[{i}] has keys {sorted(p)} but grid[0] has {sorted(first)}: "
                "every point must name the same parameters"
            )
    return [dict(p) for p in grid]


def _check_count(n: int, made_of: str) -> None:
    if n > MAX_SWEEP_POINTS:
        raise ValueError(
            f"this sweep has {n:,} points ({made_of}); one sweep takes at most {MAX_SWEEP_POINTS:,}: "
            "split it into several sweeps, or sweep fewer values"
        )


def job_options(options: Any) -> JobOptions:
    """``options=`` of a sweep as the JobOptions of its points (no job_id or key: those name one job)."""
    if options is None:
        return JobOptions()
    if isinstance(options, JobOptions):
        opts = options
    elif isinstance(options, dict):
        opts = JobOptions.build(**options)
    else:
        raise TypeError(f"options must be a dict of job options, not {type(options).__name__}")
    if opts.job_id or opts.key:
        raise ValueError("job_id / key name one job; a sweep makes many (leave them out of options)")
    return opts


def check_sweep(fn: Any, grid: Any, options: Any, params: dict) -> tuple[list[dict], JobOptions]:
    """A sweep call's points and job options, every argument checked (nothing is sent before this passed;
    the sweep's own options, ``cache``, ``name`` and ``client``, were checked when its Sweeper was made)."""
    if not callable(fn):
        raise TypeError(f"sweep() needs a callable as its first argument, not {type(fn).__name__}: {fn!r}")
    points = _grid_points(grid, params)
    _check_fits(fn, points[0])
    return points, job_options(options)


def _check_fits(fn: Any, point: dict) -> None:
    """Every point names the same parameters: if the first cannot be passed to ``fn`` (a name it does
    not take, a required one missing), none can, and each job would fail on its worker."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C callable without a signature: the worker will tell
        return
    try:
        sig.bind(**point)
    except TypeError as exc:
        name = getattr(fn, "__name__", type(fn).__name__)
        raise TypeError(f"sweep parameters {sorted(point)} do not fit {name}{sig}: {exc}") from None
