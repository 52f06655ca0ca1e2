"""Functions shared by a batch: one big function (a closure over a big array) used by several jobs
of an ``nq.map`` or a sweep is stored once in the object store, like an ``nq.put`` value, and each
job body carries a :class:`FunctionRef` instead of a copy. It unpickles as the function inside a job
(a :class:`~naq_nb.core.blobs.ObjectRef`'s rule)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Sequence

from .blobs import ObjectRef, pickle_value, put_bytes

if TYPE_CHECKING:
    from .broker import Broker
    from .job import Job

__all__ = ["FunctionRef", "shared_functions"]

_SHARE_MIN = 256 * 1024  # a function this big used by several jobs of a batch is stored once


class FunctionRef(ObjectRef):
    """An :class:`ObjectRef` to a function, named like it (job metadata and displays show the name)."""

    __slots__ = ("__dict__",)

    def __init__(self, ref: ObjectRef, fn: Any) -> None:
        super().__init__(ref.bucket, ref.name, ref.size, ref.sha256)
        self.__dict__.update(
            __module__=getattr(fn, "__module__", None),
            __qualname__=getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "?"),
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a stored function runs inside a job only")


class _SharedFunctions:
    """While encoding a batch: one big function used by several jobs goes as a stored reference."""

    def __init__(self, broker: "Broker", jobs: Sequence["Job"]) -> None:
        self.broker, self.jobs = broker, jobs
        self.swapped: list[tuple["Job", Any]] = []

    async def __aenter__(self) -> None:
        if self.broker.serializer.name != "pickle":
            return  # JSON mode: functions travel as import paths
        groups: dict[int, list["Job"]] = {}
        for job in self.jobs:
            if not isinstance(job.function, str):
                groups.setdefault(id(job.function), []).append(job)
        loop = asyncio.get_running_loop()
        for group in groups.values():
            fn = group[0].function
            if len(group) < 2:
                continue
            data, sha = await loop.run_in_executor(None, pickle_value, fn, "the function the batch's jobs share")
            if len(data) < _SHARE_MIN:
                continue
            ref = FunctionRef(await put_bytes(self.broker, data, sha), fn)
            for job in group:
                self.swapped.append((job, job.function))
                job.function = ref

    async def __aexit__(self, *exc: object) -> None:
        for job, fn in self.swapped:
            job.function = fn


def shared_functions(broker: "Broker", jobs: Sequence["Job"]) -> _SharedFunctions:
    """``async with shared_functions(broker, jobs):`` around encoding a batch. A function (with what
    it captures) of at least 256 KiB used by several jobs of the batch (``nq.map``, a sweep) is
    stored once, like ``nq.put``, and each body carries a reference instead of a copy."""
    return _SharedFunctions(broker, jobs)
