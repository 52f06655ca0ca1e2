"""Serializers for calls, results and exceptions, and payload signing.

* ``pickle`` (default): cloudpickle, so lambdas, closures and functions defined
  in ``__main__`` or a notebook travel by value.
* ``json``: functions travel only as ``module:function`` paths and arguments
  must be plain JSON; a JSON-mode worker never unpickles anything and calls
  only what ``NAQ_JSON_ALLOWED`` allows (exact ``module:function`` entries, or
  functions defined in a listed module; never an attribute path), or without a
  list only functions of the user's own modules (see :func:`json_default_policy`).

With signing keys, a job message is signed over its id, its ``Naq-Meta`` header
and its body (:func:`sign_job`), a result record is sealed bound to its job id
(:func:`seal_record`), and both are checked against every accepted key *before*
anything in them is unpickled or imported.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import importlib
import importlib.util
import io
import json
import logging
import os
import pickle
import re
import site
import sys
import sysconfig
import threading
from typing import Any, Callable, Iterator, Sequence

import cloudpickle

from . import jsontext
from .errors import SerializationError, SignatureError

log = logging.getLogger("naq_nb")

__all__ = [
    "Serializer",
    "PickleSerializer",
    "JsonSerializer",
    "get_serializer",
    "sign",
    "verify",
    "sign_job",
    "verify_job",
    "seal_record",
    "open_record",
    "pack_record",
    "unpack_record",
    "import_path_of",
    "resolve_import_path",
]


class Serializer:
    name = "base"

    def dumps_call(self, fn: Callable[..., Any] | str, args: tuple, kwargs: dict) -> bytes:
        raise NotImplementedError

    def loads_call(self, data: bytes) -> tuple[Callable[..., Any], tuple, dict]:
        raise NotImplementedError

    def batch_dumps_call(
        self, *, functions_once: bool = False
    ) -> Callable[[Callable[..., Any] | str, tuple, dict], bytes]:
        """A :meth:`dumps_call` for the calls of one batch, used by one thread while the batch's
        functions live. ``functions_once``: each function may be serialized once for the batch (the
        bodies then decode to the same calls but need not be :meth:`dumps_call`'s bytes)."""
        return self.dumps_call

    def dumps_value(self, value: Any) -> bytes:
        raise NotImplementedError

    def loads_value(self, data: bytes) -> Any:
        raise NotImplementedError

    def dumps_exception(self, exc: BaseException) -> bytes:
        """Best effort: empty bytes when the exception cannot travel."""
        return b""

    def loads_exception(self, data: bytes) -> BaseException | None:
        return None


class _PickledFunction:
    """A function pickled once for a batch: it pickles as ``pickle.loads(<its bytes>)``, so a body
    carrying it unpickles to the function itself (workers need nothing new)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return (pickle.loads, (self.data,))


_SCALARS = frozenset((type(None), bool, int, float, complex, str, bytes))


class PickleSerializer(Serializer):
    name = "pickle"

    def dumps_call(self, fn: Callable[..., Any] | str, args: tuple, kwargs: dict) -> bytes:
        try:
            return cloudpickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # cloudpickle raises TypeError, PicklingError, AttributeError...
            raise SerializationError(f"cannot pickle the job: {_find_unpicklable(fn, args, kwargs, exc)}") from exc

    def batch_dumps_call(
        self, *, functions_once: bool = False
    ) -> Callable[[Callable[..., Any] | str, tuple, dict], bytes]:
        # One pickler for the whole batch: making one is half the cost of pickling a small call. Its
        # memo is cleared per call, so each body is what dumps_call gives. Per batch, not per thread:
        # cloudpickle keys state by id() of module globals, safe only while the batch's functions live.
        # functions_once: a function (a notebook's is pickled by value, 50-100 us) is pickled once and
        # its bytes go in every body, which unpickles to the function as before. Such a body is not
        # dumps_call's bytes (no use where a digest names the call), and an object both captured by the
        # function and passed as an argument arrives as two copies instead of one.
        buf = io.BytesIO()
        pickler = cloudpickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
        once: dict[int, tuple[Any, _PickledFunction]] = {}  # id(fn) -> (fn, kept alive so the id stays its own)

        def dumps(fn: Callable[..., Any] | str, args: tuple, kwargs: dict) -> bytes:
            buf.seek(0)
            buf.truncate()
            pickler.clear_memo()
            try:
                sent: Any = fn
                if functions_once and not isinstance(fn, str):
                    hit = once.get(id(fn))
                    if hit is None:
                        hit = once[id(fn)] = (fn, _PickledFunction(cloudpickle.dumps(fn, pickle.HIGHEST_PROTOCOL)))
                    sent = hit[1]
                pickler.dump((sent, args, kwargs))
            except Exception as exc:  # as in dumps_call
                raise SerializationError(f"cannot pickle the job: {_find_unpicklable(fn, args, kwargs, exc)}") from exc
            return buf.getvalue()

        return dumps

    def loads_call(self, data: bytes) -> tuple[Callable[..., Any], tuple, dict]:
        try:
            fn, args, kwargs = cloudpickle.loads(data)
        except Exception as exc:
            hint = ""
            if isinstance(exc, ModuleNotFoundError):  # a function or class sent by reference
                hint = (
                    " (this worker's sys.path is the one it started with: put the module's folder on "
                    "PYTHONPATH, or on sys.path before nq.local() starts its worker)"
                )
            raise SerializationError(f"cannot unpickle the job payload: {type(exc).__name__}: {exc}{hint}") from exc
        if isinstance(fn, str):  # enqueued by name ('pkg.mod:func'): imported here, where the job runs
            fn = resolve_import_path(fn)
        return fn, tuple(args), dict(kwargs)

    def dumps_value(self, value: Any) -> bytes:
        if type(value) in _SCALARS:  # the same bytes cloudpickle writes (it overrides none of these), a Pickler less
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # a __reduce__ raising SystemExit is the value's fault too
            raise SerializationError(f"cannot pickle the result ({type(value).__name__}): {exc}") from exc

    def loads_value(self, data: bytes) -> Any:
        try:
            return cloudpickle.loads(data)
        except Exception as exc:
            raise SerializationError(f"cannot unpickle the result: {type(exc).__name__}: {exc}") from exc

    def dumps_exception(self, exc: BaseException) -> bytes:
        try:
            data = cloudpickle.dumps(exc)
            cloudpickle.loads(data)  # some exceptions pickle but cannot be rebuilt
            return data
        except BaseException as err:  # any failure (SystemExit from a __reduce__ too): the text still travels
            log.debug("exception %s is not sent pickled: %s", type(exc).__name__, err)
            return b""

    def loads_exception(self, data: bytes) -> BaseException | None:
        if not data:
            return None
        try:
            exc = cloudpickle.loads(data)
        except Exception as err:  # its class may not import here: the caller rebuilds a JobExecutionError instead
            log.debug("a pickled exception cannot be rebuilt here: %s", err)
            return None
        return exc if isinstance(exc, BaseException) else None


class JsonSerializer(Serializer):
    """Functions as ``module:function`` paths, arguments and results as JSON.

    ``allowed`` entries are ``module:function`` (exactly that function) or
    ``module`` (functions defined in that very module, reached by one plain
    attribute). Without entries, see :func:`json_default_policy`.
    """

    name = "json"

    def __init__(self, allowed: tuple[str, ...] = ()) -> None:
        self.allowed = tuple(a.strip() for a in allowed if a and a.strip())
        for entry in self.allowed:
            mod, colon, fn = entry.partition(":")
            if not _MODULE_RE.fullmatch(mod) or (colon and not _IDENT_RE.fullmatch(fn)):
                raise SerializationError(
                    f"NAQ_JSON_ALLOWED entry {entry!r} must be 'package.module' or "
                    "'package.module:function' (no attribute paths)"
                )

    def dumps_call(self, fn: Callable[..., Any] | str, args: tuple, kwargs: dict) -> bytes:
        path = fn if isinstance(fn, str) else import_path_of(fn)
        if self.allowed:
            self.check_allowed(path)  # refuse at enqueue what a worker with the same list would refuse
        try:
            data = json.dumps({"func": path, "args": list(args), "kwargs": kwargs}, separators=(",", ":")).encode()
            bad = _non_str_key(args) or _non_str_key(kwargs)
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"JSON serializer: arguments of {path} are not JSON: {_find_unjson(args, kwargs)}"
            ) from exc
        except RecursionError:
            raise SerializationError(f"JSON serializer: arguments of {path} are nested too deeply to be JSON") from None
        if bad:
            raise SerializationError(f"JSON serializer: arguments of {path} would change on the way: {bad}")
        return data

    def loads_call(self, data: bytes) -> tuple[Callable[..., Any], tuple, dict]:
        try:
            d = json.loads(data)
            path, args, kwargs = d["func"], d.get("args", []), d.get("kwargs", {})
            if not isinstance(path, str) or not isinstance(args, list) or not isinstance(kwargs, dict):
                raise TypeError("func must be a string, args a list and kwargs an object")
        except Exception as exc:
            raise SerializationError(f"malformed JSON job payload: {exc}") from exc
        return self.check_allowed(path), tuple(args), dict(kwargs)

    def check_allowed(self, path: str) -> Callable[..., Any]:
        """The function ``path`` names if this serializer may call it, else SerializationError."""
        mod_name, colon, fn_name = path.partition(":")
        if not colon or not _MODULE_RE.fullmatch(mod_name) or not _IDENT_RE.fullmatch(fn_name):
            raise SerializationError(
                f"function {path!r} is not allowed: a JSON job names 'module:function' "
                "with a plain function name (no attribute paths)"
            )
        if self.allowed:
            exact = path in self.allowed
            if not exact and mod_name not in self.allowed:
                raise SerializationError(f"function {path!r} is not allowed by NAQ_JSON_ALLOWED {list(self.allowed)}")
        else:
            _warn_default_policy()
            _check_default_policy(mod_name, path)
            exact = False
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except Exception as exc:
            raise SerializationError(f"cannot import {path!r}: {type(exc).__name__}: {exc}") from None
        # A module entry covers what the module defines, not what it imported (``from os import system``).
        if not callable(fn) or (not exact and getattr(fn, "__module__", None) != mod_name):
            raise SerializationError(
                f"function {path!r} is not allowed: {fn_name} is not a function defined in {mod_name}"
            )
        return fn

    def dumps_value(self, value: Any) -> bytes:
        try:
            data = json.dumps(value, separators=(",", ":")).encode()
            bad = _non_str_key(value)
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"JSON serializer: the result ({type(value).__name__}) is not JSON: {exc}"
            ) from exc
        except RecursionError:
            raise SerializationError(
                f"JSON serializer: the result ({type(value).__name__}) is nested too deeply to be JSON"
            ) from None
        if bad:
            raise SerializationError(f"JSON serializer: the result would change on the way: {bad}")
        return data

    def loads_value(self, data: bytes) -> Any:
        try:
            return jsontext.loads(data)
        except ValueError as exc:
            raise SerializationError(f"malformed JSON result: {exc}") from None


_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_warned = False
_warn_lock = threading.Lock()


def json_default_policy() -> str:
    """What a JSON-mode worker without ``NAQ_JSON_ALLOWED`` calls (the README repeats it)."""
    return (
        "functions defined directly in modules outside the Python standard library, site-packages and "
        "naq_nb (your own project's modules); set NAQ_JSON_ALLOWED='pkg.tasks,pkg.other:func' to allow "
        "exactly those"
    )


def _warn_default_policy() -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    log.warning("JSON serializer without NAQ_JSON_ALLOWED: jobs may call %s", json_default_policy())


@functools.lru_cache(maxsize=1)
def _system_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= set(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    dirs.add(os.path.dirname(os.path.abspath(__file__)).rsplit(os.sep, 1)[0])  # naq_nb itself
    return tuple(os.path.realpath(d) + os.sep for d in dirs if d)


def _check_default_policy(mod_name: str, path: str) -> None:
    """Refuse modules of the standard library, installed packages and naq_nb, before importing anything."""
    top = mod_name.split(".", 1)[0]
    if top in sys.builtin_module_names or top in getattr(sys, "stdlib_module_names", ()) or top == "naq_nb":
        raise SerializationError(
            f"function {path!r} is not allowed: without NAQ_JSON_ALLOWED a JSON worker "
            f"calls only {json_default_policy()}"
        )
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError) as exc:
        raise SerializationError(f"cannot import {path!r}: {exc}") from None
    origin = os.path.realpath(spec.origin) if spec is not None and spec.origin else ""
    if spec is None or not origin or origin.startswith(_system_dirs()):
        raise SerializationError(
            f"function {path!r} is not allowed: without NAQ_JSON_ALLOWED a JSON worker "
            f"calls only {json_default_policy()}"
        )


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
        raise SerializationError(
            f"JSON serializer cannot send {qual!r} from {mod}: lambdas and nested functions "
            "have no import path; define it at module level or use the pickle serializer"
        )
    if mod == "__main__":
        raise SerializationError(
            f"JSON serializer cannot send {qual!r} defined in __main__ (a script or notebook): "
            "workers cannot import it; move it to a module or use the pickle serializer"
        )
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
# Every signed thing is bound to its job id and to what it is (a job message or a
# result record), with length-prefixed parts, so no signed piece can be moved to
# another job or reinterpreted as another kind of message.

_JOB_DOMAIN = b"naq-job-v2"
_RESULT_DOMAIN = b"naq-result-v2"
_SIG_PREFIX = "v2:"


def _mac(key: bytes, *parts: bytes) -> str:
    m = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        m.update(len(part).to_bytes(8, "big"))
        m.update(part)
    return _SIG_PREFIX + m.hexdigest()


def _keys(keys: bytes | Sequence[bytes]) -> tuple[bytes, ...]:
    if isinstance(keys, (bytes, bytearray)):
        return (bytes(keys),) if keys else ()
    return tuple(k for k in keys if k)


def _check(keys: tuple[bytes, ...], parts: tuple[bytes, ...], signature: str | None, what: str) -> None:
    if not signature:
        raise SignatureError(f"bad signature: {what} is not signed but signing is required here (NAQ_SIGNING_KEY)")
    if not any(hmac.compare_digest(_mac(k, *parts), signature) for k in keys):
        raise SignatureError(
            f"bad signature: {what} does not verify with any configured key (NAQ_SIGNING_KEY / NAQ_SIGNING_KEYS)"
        )


def sign_job(key: bytes, job_id: str, meta_header: str, body: bytes) -> str:
    """Signature of a job message: its id, its ``Naq-Meta`` header (options, queue) and its body."""
    return _mac(key, _JOB_DOMAIN, job_id.encode(), meta_header.encode(), body)


def verify_job(
    keys: bytes | Sequence[bytes], job_id: str, meta_header: str, body: bytes, signature: str | None
) -> None:
    """Raise :class:`SignatureError` unless ``signature`` was made by one of ``keys`` over exactly this job."""
    ks = _keys(keys)
    if ks:
        _check(ks, (_JOB_DOMAIN, job_id.encode(), meta_header.encode(), body), signature, f"job {job_id}")


def sign(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 of raw bytes (kept for callers that sign opaque blobs)."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def verify(key: bytes, data: bytes, signature: str | None) -> None:
    if not signature:
        raise SignatureError("bad signature: payload is not signed but signing is required here (NAQ_SIGNING_KEY)")
    if not hmac.compare_digest(sign(key, data), signature):
        raise SignatureError("bad signature: payload signature does not verify with this key")


def seal_record(record: bytes, job_id: str, key: bytes) -> bytes:
    """Sign a packed result record for ``job_id``: a ``"sig"`` field is appended as the last key of its head."""
    if not key:
        return record
    head, sep, payload = record.partition(b"\n")
    if not head.endswith(b"}") or head == b"{}":
        raise SerializationError("cannot seal a record without a JSON object head")
    sig = _mac(key, _RESULT_DOMAIN, job_id.encode(), head, payload)
    return head[:-1] + b',"sig":"' + sig.encode() + b'"}' + b"\n" + payload


def open_record(data: bytes, job_id: str, keys: bytes | Sequence[bytes]) -> tuple[dict, bytes]:
    """Unpack a result record, checking its seal against ``keys`` first (none: no check)."""
    meta, payload = unpack_record(data)
    ks = _keys(keys)
    if not ks:
        return meta, payload
    sig = meta.get("sig")
    head = data.partition(b"\n")[0]
    suffix = b',"sig":"' + str(sig).encode() + b'"}'
    if not isinstance(sig, str) or not head.endswith(suffix):
        raise SignatureError(
            f"bad signature: the result record of job {job_id} is not signed "
            "but signing is required here (NAQ_SIGNING_KEY)"
        )
    _check(
        ks,
        (_RESULT_DOMAIN, job_id.encode(), head[: -len(suffix)] + b"}", payload),
        sig,
        f"the result record of job {job_id}",
    )
    return meta, payload


# --- records: a JSON header line, then raw bytes ------------------------------


_RECORD_HEAD = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps with options makes one a call


def pack_record(meta: dict, payload: bytes = b"") -> bytes:
    return _RECORD_HEAD.encode(meta).encode() + b"\n" + payload


def unpack_record(data: bytes) -> tuple[dict, bytes]:
    head, _, payload = data.partition(b"\n")
    try:
        meta = jsontext.loads(head)
    except ValueError as exc:
        raise SerializationError(f"malformed record: {exc}") from None
    if not isinstance(meta, dict):  # forged or damaged: every reader expects an object
        raise SerializationError(f"malformed record: its head must be a JSON object, not {type(meta).__name__}")
    return meta, payload


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
    for where, obj in [
        *((f"argument {i}", a) for i, a in enumerate(args)),
        *((f"keyword argument {k!r}", v) for k, v in kwargs.items()),
    ]:
        err = _try_pickle(obj)
        if err is not None:
            return f"{where} ({type(obj).__name__}: {_short(obj)}) cannot be pickled: {err}"
    if _try_pickle(fn) is not None:
        for where, obj in _captured(fn):
            err = _try_pickle(obj)
            if err is not None:
                return (
                    f"function {getattr(fn, '__qualname__', fn)!r} uses {where} "
                    f"({type(obj).__name__}: {_short(obj)}) which cannot be pickled: {err}"
                )
        return f"function {fn!r} cannot be pickled: {exc}"
    return f"{type(exc).__name__}: {exc}"


def _find_unjson(args: tuple, kwargs: dict) -> str:
    for where, obj in [
        *((f"argument {i}", a) for i, a in enumerate(args)),
        *((f"keyword argument {k!r}", v) for k, v in kwargs.items()),
    ]:
        try:
            json.dumps(obj)
        except (TypeError, ValueError) as exc:
            return f"{where} ({type(obj).__name__}) is not JSON serializable: {exc}"
    return "unknown"


def _non_str_key(obj: Any) -> str:
    """The first dict key json.dumps would silently turn into a string (``{1: "a"}`` comes back as
    ``{"1": "a"}``: a wrong answer nobody is told of), described; "" when there is none. Only
    containers are walked, so a long list of numbers costs one type check an item."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            for k in o:
                if type(k) is not str:
                    return (
                        f"dict key {_short(k)} ({type(k).__name__}) would come back as a string; "
                        "use string keys or the pickle serializer"
                    )
            stack.extend(v for v in o.values() if isinstance(v, (dict, list, tuple)))
        elif isinstance(o, (list, tuple)):
            stack.extend(v for v in o if isinstance(v, (dict, list, tuple)))
    return ""


def _short(obj: Any) -> str:
    r = repr(obj)
    return r if len(r) <= 80 else r[:77] + "..."
