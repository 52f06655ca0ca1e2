"""Whether a pickled call can be unpickled without running any code.

A worker in process mode leaves unpickling to its job processes: an argument's
``__reduce__`` or ``__setstate__`` may crash, exit or hang, and that must end a
job process, not the worker. The one exception is an async function a job
process has already found async (see ``ProcessExecution``): its call is decoded
in the worker to run on the worker's loop. That is done only for a body this
module passes, one whose pickle opcodes build nothing but plain data (numbers,
strings, bytes, None, booleans, tuples, lists, dicts, sets) around a single
global, the function itself, named by the same module and qualified name as the
job's ``Naq-Meta`` says. Such a pickle imports that function's module and runs
no other code. Anything else (an object argument, a function pickled by value,
a ``functools.partial``) goes to a job process as every sync call does.
"""

from __future__ import annotations

import functools
import pickletools

__all__ = ["is_plain_call"]

# Opcodes that push, store or combine plain values (no imports, no calls, no attribute setting).
_PLAIN = frozenset(
    """PROTO FRAME STOP MARK POP POP_MARK DUP MEMOIZE PUT BINPUT LONG_BINPUT GET BINGET LONG_BINGET
    NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT
    SHORT_BINUNICODE BINUNICODE BINUNICODE8 UNICODE SHORT_BINBYTES BINBYTES BINBYTES8
    EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 EMPTY_LIST APPEND APPENDS LIST EMPTY_DICT DICT SETITEM SETITEMS
    EMPTY_SET ADDITEMS FROZENSET""".split()
)
_TEXT = frozenset(("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"))


_BYTES = frozenset(("SHORT_BINBYTES", "BINBYTES", "BINBYTES8"))
# How a batch carries a function pickled once (serialization._PickledFunction): pickle.loads(bytes).
_LOADS = ["_pickle", "loads"]
_WRAPPED = ("BYTES", "TUPLE1", "REDUCE")  # what must follow that global (MEMOIZE aside)


# A pickle of the function by reference and nothing else (what pickle.loads unwraps above).
_FUNCTION_ONLY = frozenset(("PROTO", "FRAME", "STOP", "MEMOIZE", "SHORT_BINUNICODE", "BINUNICODE"))


# Calls with small arguments repeat (a no-argument call's body is the same every time), and a scan
# in pure Python costs several times the unpickling it guards: small bodies' verdicts are kept.
_KEEP_BELOW = 512


def is_plain_call(body: bytes, function: str) -> bool:
    """True if unpickling ``body`` runs no code but the import of ``function`` (``module.qualname``),
    the function being given directly or as ``pickle.loads`` of a pickle that is only that."""
    if isinstance(body, bytes) and len(body) < _KEEP_BELOW:
        return _kept_verdict(body, function)
    return _scan(body, function, _PLAIN)


@functools.lru_cache(maxsize=1024)
def _kept_verdict(body: bytes, function: str) -> bool:
    return _scan(body, function, _PLAIN)


def _scan(body: object, function: str, plain: frozenset[str]) -> bool:
    """One pass over ``body``'s opcodes: only ``plain`` ones around the one global ``function``."""
    if not isinstance(body, bytes):
        return False
    texts: list[str] = []  # strings pushed just before (memoized or not): STACK_GLOBAL's module and name
    found = False
    wrapped: list[str] = []  # after a pickle.loads global: the opcodes still expected, in order
    try:
        for op, arg, _pos in pickletools.genops(body):
            name = op.name
            if wrapped:
                if name == "MEMOIZE":
                    continue
                kind = "BYTES" if name in _BYTES else name
                if kind != wrapped.pop(0) or (kind == "BYTES" and not _scan(arg, function, _FUNCTION_ONLY)):
                    return False
                found = not wrapped
                continue
            if name in plain:
                if name in _TEXT:
                    texts = [*texts[-1:], str(arg)]
                elif name != "MEMOIZE":
                    texts = []  # anything else on the stack in between: not the pair STACK_GLOBAL takes
                continue
            if found:
                return False  # a second global, or code to run
            if name == "STACK_GLOBAL" and texts == _LOADS and plain is _PLAIN:
                wrapped = list(_WRAPPED)
                continue
            if name == "STACK_GLOBAL" and len(texts) == 2:
                found = f"{texts[0]}.{texts[1]}" == function
            elif name == "GLOBAL":
                mod, _, qual = str(arg).partition(" ")
                found = f"{mod}.{qual}" == function
            if not found:
                return False
    except Exception:  # not a pickle genops can read: the job process reports it
        return False
    return found and not wrapped
