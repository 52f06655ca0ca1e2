"""naq's job-option keywords (``max_retries``, ``retry_delay``, ``retry_strategy``, ``retry_on``,
``ignore_on``, ``depends_on``, ``timeout``, ``result_ttl``) taken out of a call's keywords, so they
become job options and never reach the function (naq's ``enqueue(fn, ..., max_retries=3)``)."""

from __future__ import annotations

from ..core.retry import RetryPolicy

__all__ = ["split_naq_options"]

_RETRY_OPTIONS = ("max_retries", "retry_delay", "retry_strategy", "retry_on", "ignore_on")
_NAQ_OPTIONS = (*_RETRY_OPTIONS, "depends_on", "timeout", "result_ttl")


def split_naq_options(kwargs: dict) -> tuple[dict, dict]:
    """naq's option keywords out of ``kwargs`` as JobOptions arguments; the rest is the function's."""
    # Accepted for naq's signature; connections here are always shared per process and thread-safe.
    kwargs.pop("prefer_thread_local", None)
    raw = {k: kwargs.pop(k) for k in _NAQ_OPTIONS if k in kwargs}
    opts = {k: raw[k] for k in ("depends_on", "timeout", "result_ttl") if raw.get(k) is not None}
    retry = {k: raw[k] for k in _RETRY_OPTIONS if raw.get(k) is not None}
    if retry:
        opts["retry"] = RetryPolicy.from_naq(
            retry.get("max_retries"),
            retry.get("retry_delay"),
            strategy=retry.get("retry_strategy"),
            retry_on=retry.get("retry_on", ()),
            ignore_on=retry.get("ignore_on", ()),
        )
    return opts, kwargs
