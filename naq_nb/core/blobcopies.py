"""Object-store bytes kept in this process's memory, so a read skips a download.

Two caches, both keyed by SHA-256 (so a hit is the very bytes a reference names):

* ``nq.put`` values a worker fetched (:func:`cache_get` / :func:`cache_put`): a sweep's
  200 jobs over one DataFrame download it once per process (at most 512 MB, least recently
  used first out).
* what this process offloaded (:func:`recent_get`), only while :func:`keep_local_copies` is
  on: ``nq.local(processes=False)`` runs workers in the notebook's process, and nats-py reads
  about 35 MB/s on a busy box (at most 256 MB, for two minutes).

No NATS here: :mod:`.blobs` does the I/O and calls these.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

__all__ = ["keep_local_copies", "keeping", "recent_put", "recent_get", "cache_get", "cache_put", "forget"]

_CACHE_MAX = 512 * 1024 * 1024  # bytes of nq.put objects kept per process (keyed by checksum)
_RECENT_MAX = 256 * 1024 * 1024  # bytes this process offloaded, kept for a reader in the same process
_RECENT_AGE = 120.0

_keep_recent = False
_recent: "OrderedDict[str, tuple[float, bytes]]" = OrderedDict()
_recent_lock = threading.Lock()
_cache: "OrderedDict[str, bytes | bytearray]" = OrderedDict()  # (a download's own buffer: never written to)
_cache_lock = threading.Lock()


def keep_local_copies(on: bool = True) -> None:
    """Keep what this process offloads for two minutes (at most 256 MB), for readers in this
    same process: set by ``nq.local()`` when its workers are threads of the notebook's process."""
    global _keep_recent
    _keep_recent = on
    if not on:
        with _recent_lock:
            _recent.clear()


def keeping() -> bool:
    """Whether :func:`keep_local_copies` is on."""
    return _keep_recent


def recent_put(sha: str, data: bytes) -> None:
    if not _keep_recent or len(data) > _RECENT_MAX:
        return
    now = time.monotonic()
    with _recent_lock:
        _recent[sha] = (now, data)
        total = sum(len(d) for _, d in _recent.values())
        while _recent and (total > _RECENT_MAX or next(iter(_recent.values()))[0] < now - _RECENT_AGE):
            total -= len(_recent.popitem(last=False)[1][1])


def recent_get(sha: str) -> bytes | None:
    with _recent_lock:
        hit = _recent.get(sha)
    return hit[1] if hit is not None and hit[0] > time.monotonic() - _RECENT_AGE else None


def cache_get(sha: str) -> bytes | bytearray | None:
    with _cache_lock:
        data = _cache.get(sha)
        if data is not None:
            _cache.move_to_end(sha)
        return data


def cache_put(sha: str, data: bytes | bytearray) -> None:
    if len(data) > _CACHE_MAX:
        return
    with _cache_lock:
        _cache[sha] = data
        while sum(len(v) for v in _cache.values()) > _CACHE_MAX:
            _cache.popitem(last=False)


def forget(sha: str) -> None:
    """Drop both copies of ``sha`` (its object was deleted here)."""
    with _cache_lock:
        _cache.pop(sha, None)
    with _recent_lock:
        _recent.pop(sha, None)
