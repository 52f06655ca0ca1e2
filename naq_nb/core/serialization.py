"""Serializers for calls, results and exceptions, and payload signing.

* ``pickle`` (default): cloudpickle, so lambdas, closures and functions defined
  in ``__main__`` or a notebook travel by value.
* ``json``: functions travel only as import paths and arguments must be plain
  JSON; a JSON-mode worker never unpickles anything, and calls only paths under
  the allowed module prefixes when ``NAQ_JSON_ALLOWED`` is set.

With a signing key, pickled payloads carry an HMAC-SHA256 signature and a worker
with the key refuses payloads whose signature is missing or wrong *before*
unpickling them.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import pickle
from typing import Any, Callable, Iterator

import cloudpickle

from .errors import SerializationError, SignatureError

__all__ = ["Serializer", "PickleSerializer", "JsonSerializer", "get_serializer",
           "sign", "verify", "pack_record", "unpack_record", "import_path_of", "resolve_import_path"]


class Serializer:
    name = "base"

    def dumps_call(self, fn: Callable[..., Any] | str, args: tuple, kwargs: dict) -> bytes:
        raise NotImplementedError

    def loads_call(self, data: bytes) -> tuple[Callable[..., Any], tuple, dict]:
        raise NotImplementedError

    def dumps_value(self, value: Any) -> bytes:
        raise NotImplementedError

    def loads_value(self, data: bytes) -> Any:
        raise NotImplementedError

    def dumps_exception(self, exc: BaseException) -> bytes:
        """Best effort: empty bytes when the exception cannot travel."""
        return b""

    def loads_exception(self, data: bytes) -> BaseException | None:
        return None


class PickleSerializer(Serializer):
    name = "pickle"

    def dumps_call(self, fn, args, kwargs):
        try:
            return cloudpickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # cloudpickle raises TypeError, PicklingError, AttributeError...
            raise SerializationError(f"cannot pickle the job: {_find_unpicklable(fn, args, kwargs, exc)}") from exc

    def loads_call(self, data):
        try:
            fn, args, kwargs = cloudpickle.loads(data)
        except Exception as exc:
            raise SerializationError(f"cannot unpickle the job payload: {type(exc).__name__}: {exc}") from exc
        return fn, tuple(args), dict(kwargs)

    def dumps_value(self, value):
        try:
            return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise SerializationError(f"cannot pickle the result ({type(value).__name__}): {exc}") from exc

    def loads_value(self, data):
        try:
            return cloudpickle.loads(data)
        except Exception as exc:
            raise SerializationError(f"cannot unpickle the result: {type(exc).__name__}: {exc}") from exc

    def dumps_exception(self, exc):
        try:
            data = cloudpickle.dumps(exc)
            cloudpickle.loads(data)  # some exceptions pickle but cannot be rebuilt
            return data
        except Exception:
            return b""

    def loads_exception(self, data):
        if not data:
            return None
        try:
            exc = cloudpickle.loads(data)
        except Exception:
            return None
        return exc if isinstance(exc, BaseException) else None


class JsonSerializer(Serializer):
    name = "json"

    def __init__(self, allowed: tuple[str, ...] = ()) -> None:
        self.allowed = tuple(allowed)

    def dumps_call(self, fn, args, kwargs):
        path = fn if isinstance(fn, str) else import_path_of(fn)
        try:
            return json.dumps({"func": path, "args": list(args), "kwargs": kwargs},
                              separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"JSON serializer: arguments of {path} are not JSON: {_find_unjson(args, kwargs)}") from exc

    def loads_call(self, data):
        try:
            d = json.loads(data)
            path, args, kwargs = d["func"], d.get("args", []), d.get("kwargs", {})
        except Exception as exc:
            raise SerializationError(f"malformed JSON job payload: {exc}") from exc
        dotted = path.replace(":", ".")
        if self.allowed and not any(dotted == p.replace(":", ".").rstrip(".")
                                    or dotted.startswith(p.replace(":", ".").rstrip(".") + ".")
                                    for p in self.allowed):
            raise SerializationError(f"function {path!r} is not under an allowed prefix {list(self.allowed)} (NAQ_JSON_ALLOWED)")
        return resolve_import_path(path), tuple(args), dict(kwargs)

    def dumps_value(self, value):
        try:
            return json.dumps(value, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"JSON serializer: the result ({type(value).__name__}) is not JSON: {exc}") from exc

    def loads_value(self, data):
        try:
            return json.loads(data)
        except ValueError as exc:
            raise SerializationError(f"malformed JSON result: {exc}") from exc


def get_serializer(name: str, allowed: tuple[str, ...] = ()) -> Serializer:
    if name == "pickle":
        return PickleSerializer()
    if name == "json":
        return JsonSerializer(allowed)
    raise SerializationError(f"unknown serializer {name!r}: use 'pickle' or 'json'")


def import_path_of(fn: Any) -> str:
    """``module:qualname`` of an importable function, or SerializationError."""
    mod = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None)
    if not callable(fn) or not mod or not qual:
        raise SerializationError(f"JSON serializer needs an importable function, got {fn!r}")
    if qual == "<lambda>" or "<locals>" in qual or "<lambda>" in qual:
        raise SerializationError(f"JSON serializer cannot send {qual!r} from {mod}: lambdas and nested functions "
                                 "have no import path; define it at module level or use the pickle serializer")
    if mod == "__main__":
        raise SerializationError(f"JSON serializer cannot send {qual!r} defined in __main__ (a script or notebook): "
                                 "workers cannot import it; move it to a module or use the pickle serializer")
    path = f"{mod}:{qual}"
    try:
        if resolve_import_path(path) is not fn:
            raise SerializationError(f"{path} does not resolve to the given function")
    except SerializationError as exc:
        raise SerializationError(f"JSON serializer: {fn!r} is not importable as {path}: {exc}") from None
    return path


def resolve_import_path(path: str) -> Callable[..., Any]:
    mod_name, _, qual = path.partition(":")
    if not qual:
        mod_name, _, qual = path.rpartition(".")
    try:
        obj: Any = importlib.import_module(mod_name)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise SerializationError(f"cannot import {path!r}: {type(exc).__name__}: {exc}") from None
    if not callable(obj):
        raise SerializationError(f"{path!r} is not callable")
    return obj


# --- signing ---------------------------------------------------------------

def sign(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def verify(key: bytes, data: bytes, signature: str | None) -> None:
    if not signature:
        raise SignatureError("payload is not signed but this worker requires signed payloads (NAQ_SIGNING_KEY)")
    if not hmac.compare_digest(sign(key, data), signature):
        raise SignatureError("payload signature does not verify: it was not made with this worker's key")


# --- records: a JSON header line, then raw bytes ------------------------------

def pack_record(meta: dict, payload: bytes = b"") -> bytes:
    return json.dumps(meta, separators=(",", ":")).encode() + b"\n" + payload


def unpack_record(data: bytes) -> tuple[dict, bytes]:
    head, _, payload = data.partition(b"\n")
    try:
        return json.loads(head), payload
    except ValueError as exc:
        raise SerializationError(f"malformed record: {exc}") from None


# --- naming the culprit -----------------------------------------------------

def _try_pickle(obj: Any) -> Exception | None:
    try:
        cloudpickle.dumps(obj)
        return None
    except Exception as exc:
        return exc


def _captured(fn: Any) -> Iterator[tuple[str, Any]]:
    code = getattr(fn, "__code__", None)
    if code is None:
        return
    for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or ()):
        try:
            yield f"captured variable {name!r}", cell.cell_contents
        except ValueError:
            continue
    g = getattr(fn, "__globals__", {})
    for name in code.co_names:
        if name in g:
            yield f"global {name!r}", g[name]


def _find_unpicklable(fn: Any, args: tuple, kwargs: dict, exc: Exception) -> str:
    for where, obj in [*((f"argument {i}", a) for i, a in enumerate(args)),
                       *((f"keyword argument {k!r}", v) for k, v in kwargs.items())]:
        err = _try_pickle(obj)
        if err is not None:
            return f"{where} ({type(obj).__name__}: {_short(obj)}) cannot be pickled: {err}"
    if _try_pickle(fn) is not None:
        for where, obj in _captured(fn):
            err = _try_pickle(obj)
            if err is not None:
                return (f"function {getattr(fn, '__qualname__', fn)!r} uses {where} "
                        f"({type(obj).__name__}: {_short(obj)}) which cannot be pickled: {err}")
        return f"function {fn!r} cannot be pickled: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _find_unjson(args: tuple, kwargs: dict) -> str:
    for where, obj in [*((f"argument {i}", a) for i, a in enumerate(args)),
                       *((f"keyword argument {k!r}", v) for k, v in kwargs.items())]:
        try:
            json.dumps(obj)
        except (TypeError, ValueError) as exc:
            return f"{where} ({type(obj).__name__}) is not JSON serializable: {exc}"
    return "unknown"


def _short(obj: Any) -> str:
    r = repr(obj)
    return r if len(r) <= 80 else r[:77] + "..."
