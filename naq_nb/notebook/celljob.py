"""The job a ``%%naq submit`` cell becomes (no IPython import: workers run it).

The cell's source runs in a fresh namespace holding the values it reads from
the notebook; the names it assigns come back as the job's result.
"""

from __future__ import annotations

from typing import Any

import cloudpickle

__all__ = ["run_cell_job"]


def run_cell_job(source: str, inputs: dict[str, Any], outputs: list[str]) -> dict[str, Any]:
    """Run ``source`` with ``inputs`` as globals; return the values of ``outputs`` it assigned.

    Values that cannot travel back (unpicklable) are left out and named under ``"__skipped__"``.
    """
    ns: dict[str, Any] = {"__name__": "__naq_cell__", **inputs}
    exec(compile(source, "<%%naq cell>", "exec"), ns)  # noqa: S102 - running the user's own cell is the point
    out: dict[str, Any] = {}
    skipped = []
    for name in outputs:
        if name not in ns:
            continue
        try:
            cloudpickle.dumps(ns[name])
        except Exception:
            skipped.append(name)
            continue
        out[name] = ns[name]
    out["__skipped__"] = skipped
    return out
