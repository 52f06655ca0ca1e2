"""Worker tracebacks that show the user's own code lines.

cloudpickle renames the file of every function it pickles by value (notebook
cells, lambdas, closures) to ``<dynamic-code>``, so a worker's traceback has
no source lines for exactly the code the user wrote. The submitting process
still has that code: :func:`localize` puts the real file name (a notebook
cell's) and its source line back into each such frame.
"""

from __future__ import annotations

import linecache
import re
import types
from typing import Any, Iterator

__all__ = ["localize"]

_FRAME = re.compile(r'^(\s*)File "<dynamic-code>", line (\d+), in (\S+)\s*$')
_MAX_CODES = 2000


def _walk_code(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _walk_code(c)


def _codes(fn: Any) -> list[types.CodeType]:
    """Code objects the job may have run: the function's (nested ones too), and those of functions in
    its globals and closure that come from the same module (helpers defined in other cells)."""
    roots = [fn]
    g = getattr(fn, "__globals__", None) or {}
    mod = getattr(fn, "__module__", None)
    roots += [v for v in list(g.values())[:_MAX_CODES] if isinstance(v, types.FunctionType) and v.__module__ == mod]
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            if isinstance(cell.cell_contents, types.FunctionType):
                roots.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    out: list[types.CodeType] = []
    for f in roots:
        code = getattr(f, "__code__", None)
        if isinstance(code, types.CodeType):
            out.extend(_walk_code(code))
    return out[:_MAX_CODES]


def _find(codes: list[types.CodeType], name: str, line: int) -> types.CodeType | None:
    for c in codes:
        if c.co_name != name or c.co_filename.startswith("<"):
            continue
        lines = [n for _, _, n in c.co_lines() if n is not None]
        if lines and min(lines + [c.co_firstlineno]) <= line <= max(lines):
            return c
    return None


def localize(traceback_text: str, fn: Any) -> str:
    """``traceback_text`` with each ``<dynamic-code>`` frame of ``fn``'s code given its file and source line."""
    if not traceback_text or "<dynamic-code>" not in traceback_text or not callable(fn):
        return traceback_text
    codes = _codes(fn)
    out = []
    for text in traceback_text.splitlines():
        m = _FRAME.match(text)
        code = _find(codes, m.group(3), int(m.group(2))) if m else None
        if m is None or code is None:
            out.append(text)
            continue
        indent, n = m.group(1), int(m.group(2))
        out.append(f'{indent}File "{code.co_filename}", line {n}, in {m.group(3)}')
        src = linecache.getline(code.co_filename, n).strip()
        if src:
            out.append(f"{indent}    {src}")
    return "\n".join(out) + ("\n" if traceback_text.endswith("\n") else "")
