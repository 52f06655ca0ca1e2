"""The job a ``%%naq submit`` cell becomes (no IPython import: workers run it).

The cell's source runs in a fresh namespace holding the values it reads from
the notebook; the names it assigns come back as the job's result, a
:class:`CellResult`. Modules the cell imports come back by name (the notebook
imports them itself), never as values.
"""

from __future__ import annotations

import types
from typing import Any

import cloudpickle

__all__ = ["run_cell_job", "CellResult"]


class CellResult(dict):
    """The values a ``%%naq submit`` cell assigned, by name.

    ``modules`` maps names the cell imported to module names; ``skipped`` lists
    names whose values could not travel back (not picklable).
    """

    def __init__(
        self,
        values: dict[str, Any] | None = None,
        modules: dict[str, str] | None = None,
        skipped: list[str] | None = None,
    ) -> None:
        super().__init__(values or {})
        self.modules = dict(modules or {})
        self.skipped = list(skipped or [])

    def __reduce__(self) -> tuple:
        return (CellResult, (dict(self), self.modules, self.skipped))

    def __repr__(self) -> str:
        parts = [f"{k} = {_short(v)}" for k, v in self.items()]
        if self.modules:
            parts.append("imported " + ", ".join(self.modules))
        if self.skipped:
            parts.append("not brought back (cannot be pickled): " + ", ".join(self.skipped))
        return "; ".join(parts) or "(the cell assigned nothing)"


def _short(v: Any, limit: int = 60) -> str:
    try:
        text = " ".join(repr(v).split())
    except Exception as exc:  # a broken __repr__ must not break the result's repr
        text = f"<{type(v).__name__}: repr failed: {exc}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_cell_job(source: str, inputs: dict[str, Any], outputs: list[str]) -> CellResult:
    """Run ``source`` with ``inputs`` as globals; return the values of ``outputs`` it assigned."""
    ns: dict[str, Any] = {"__name__": "__naq_cell__", **inputs}
    exec(compile(source, "<%%naq cell>", "exec"), ns)  # noqa: S102 - running the user's own cell is the point
    values: dict[str, Any] = {}
    modules: dict[str, str] = {}
    skipped = []
    for name in outputs:
        if name not in ns:
            continue
        value = ns[name]
        if isinstance(value, types.ModuleType):
            modules[name] = value.__name__
            continue
        try:
            cloudpickle.dumps(value)
        except Exception:  # any pickling failure: the value stays on the worker, its name is reported
            skipped.append(name)
            continue
        values[name] = value
    return CellResult(values, modules, skipped)
