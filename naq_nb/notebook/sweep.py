"""Parameter sweeps: ``nq.sweep(train, lr=[1e-3, 1e-2], depth=[2, 4, 8])``.

One job per parameter point (the cartesian product of the keyword lists, or an
explicit ``grid=[{...}, ...]``), each point passed to the function as keyword
arguments. Everything is checked before anything is sent; the jobs are then
published in pipelined batches of 1,000. The sweep's record (points, job ids, the
pickled function) is kept on the server, so :meth:`Sweep.attach` gets it back
after a kernel restart, and a content cache (function pickle + point) makes a
re-run of the same cell reuse every point that already succeeded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generator, Iterable

import cloudpickle

from ..core.results import check_timeout
from ..client.client import Client
from ..client.shared import say_loudly
from ..client.future import JobFuture, attach_many, refuse_wait_on_loop_thread, submit_jobs
from ..client.loop import run_async, run_sync
from ..client.twins import blocking, blocking_classmethod
from ..client.session import default_client, store_note, unknown_id_message
from ..core.errors import JobNotFoundError
from ..core.withdraw import describe, withdraw
from ..core.job import JobOptions, func_name, new_job_id
from .fmt import short_value, status_summary
from .sweep_frame import sweep_frame
from .sweep_grid import check_sweep, job_options
from .sweep_store import (
    SweepBody,
    SweepHead,
    SweepNotFoundError,
    cache_lookup,
    cache_store,
    function_bytes,
    function_key,
    function_digest,
    load_record,
    point_digests,
    save_record,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["sweep", "sweep_async", "Sweep", "Sweeper", "SweepNotFoundError"]

_SUBMIT_BATCH = 1000  # jobs per pipelined publish batch


# --- the loop-side work ---------------------------------------------------------------------------
async def _submit(
    client: Client,
    fn: Callable,
    fn_key: bytes,
    points: list[dict],
    idx: list[int],
    digests: list[str],
    opts: JobOptions,
    cache: bool,
    before_send: Callable[[dict[int, str]], Awaitable[None]] | None = None,
    withdrawn: "_Withdrawn | None" = None,
) -> tuple[dict[int, JobFuture], set[int]]:
    """Submit the points ``idx`` (cache hits are attached instead); index -> future, and the hit indices.
    ``before_send(index -> job id)`` runs once every point has its job id, before the first publish.
    Cancelled, it cancels the jobs it sent; how that went for those of the batches sent in full is
    kept in ``withdrawn`` (else said in a line of its own)."""
    # Every read and write here goes through the client's _ask, as the client's own calls do: a
    # connection that is down is waited for within JetStream's bound and then named (NoAnswerError).
    fn_digest = function_digest(fn_key)
    wanted = [digests[i] for i in idx]
    known = await client._ask("reading the sweep cache", lambda b: cache_lookup(b, wanted, fn_digest)) if cache else {}
    futs: dict[int, JobFuture] = {}
    if known:  # attaching fetches each job's status and result once: keep those that succeeded
        cand = [idx[k] for k in known]
        for i, f in zip(cand, await attach_many(client, list(known.values()))):
            if f.done() and not f.cancelled() and f.exception(0) is None:
                futs[i] = f
    hits = set(futs)
    todo = [i for i in idx if i not in hits]
    jobs = [client.make_job(fn, (), points[i], opts) for i in todo]
    if before_send is not None:
        await before_send({**{i: f.job_id for i, f in futs.items()}, **{i: j.job_id for i, j in zip(todo, jobs)}})
    # Pipelined batches: each batch's acknowledgements are read before the next is sent, so a
    # huge sweep never has so many publishes in flight that the loop reads their acks too late.
    sent = 0
    try:
        for k in range(0, len(jobs), _SUBMIT_BATCH):
            futs.update(zip(todo[k : k + _SUBMIT_BATCH], await submit_jobs(client, jobs[k : k + _SUBMIT_BATCH])))
            sent = min(k + _SUBMIT_BATCH, len(jobs))
        if jobs:
            # Inside the try: a Ctrl-C here (the store waiting on a connection that is down) comes
            # after every batch went, and cancels them all as a Ctrl-C during the sends does.
            made = [(digests[i], j.job_id) for i, j in zip(todo, jobs)]
            await client._ask("storing the sweep cache", lambda b: cache_store(b, made, fn_digest))
    except asyncio.CancelledError:
        # Interrupted: a batch under way cancelled what it had sent (and said so); the batches sent
        # in full are cancelled here, so no point is left running with nobody following it.
        if sent:
            b = await client.broker()
            done = await withdraw(b, jobs[:sent], len(jobs), "nq.sweep", speak=withdrawn is None)
            if withdrawn is not None:
                withdrawn.tally.update(done)
        if withdrawn is not None:
            withdrawn.batch_cut = sent < len(jobs)
        raise
    return futs, hits


class _Withdrawn:
    """What an interrupted sweep submit cancelled itself (the points of the batches it had sent in
    full), and whether a batch was under way then (that batch cancels what it sent, in a line of its own)."""

    def __init__(self) -> None:
        self.tally: Counter[str] = Counter()
        self.batch_cut = False

    def line(self, n_points: int, sweep_id: str) -> str:
        """The line an interrupted ``nq.sweep`` says: what its withdrawal did, no more."""
        n = sum(self.tally.values())
        told = []
        if n:
            which = "of the batches it had sent in full" if self.batch_cut else "it had sent"
            told.append(f"of the {n:,} points {which}, {describe(self.tally)}")
        if self.batch_cut:
            told.append("a line above tells of the batch it was sending, if any of it went")
        what = "; ".join(told) or "it had sent none"
        return (
            f"nq.sweep was interrupted while it submitted its {n_points:,} points; {what}. "
            f"Sweep.attach({sweep_id!r}) follows the sweep; its .retry_failed() sends those points again"
        )


async def _all_done(futs: list[JobFuture], timeout: float | None) -> None:
    pending = [f for f in futs if not f.done()]
    if not pending:
        return
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    left = [len(pending)]
    lock = threading.Lock()

    def _one(_f: concurrent.futures.Future) -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            loop.call_soon_threadsafe(_wake)

    def _wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    for f in pending:
        f._on_done(_one)
    try:
        await asyncio.wait_for(waiter, timeout)
    except asyncio.TimeoutError:
        n = sum(not f.done() for f in futs)
        raise TimeoutError(f"{n} of {len(futs)} sweep points did not finish within {timeout:g}s") from None


class Sweep:
    """A parameter sweep: one :class:`JobFuture` per point, a live display, a DataFrame at the end.

    Made by :func:`sweep` or :meth:`attach`. ``await sweep`` waits for every point
    and returns the sweep.
    """

    def __init__(
        self,
        client: Client,
        head: SweepHead,
        body: SweepBody,
        futures: list[JobFuture],
        cached: Iterable[int] = (),
        fn: Callable | None = None,
    ) -> None:
        self.client = client
        self._head = head
        self.points: list[dict] = body["points"]
        self._digests: list[str] = body["digests"]
        self._fn_bytes: bytes = body["fn"]
        self._options: JobOptions = body["options"]
        self._fn = fn
        self.futures: list[JobFuture] = futures
        self.cached: set[int] = set(cached)
        self._listeners: list[Callable[["Sweep", int], None]] = []
        self._unsubs: list[Callable[[], None] | None] = [None] * len(futures)  # per point
        self._lock = threading.Lock()
        self._watch(range(len(futures)))

    # --- identity -------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """The sweep's id (``Sweep.attach(id)`` brings it back)."""
        return self._head["id"]

    @property
    def name(self) -> str:
        """The name given to :func:`sweep`, else the function's name."""
        return self._head.get("name") or self.function.rsplit(".", 1)[-1]

    @property
    def function(self) -> str:
        """The qualified name of the swept function."""
        return self._head["function"]

    @property
    def created(self) -> float:
        """Creation time (epoch seconds)."""
        return self._head["created"]

    @property
    def job_ids(self) -> list[str]:
        """Job id per point, in point order."""
        return [f.job_id for f in self.futures]

    kind = "sweep"

    def __len__(self) -> int:
        return len(self.points)

    def label(self, i: int) -> str:
        """Point ``i``'s parameters, compact: ``lr=0.001, depth=4``."""
        return ", ".join(f"{k}={short_value(v)}" for k, v in self.points[i].items())

    # --- creation ----------------------------------------------------------------------------
    @classmethod
    async def attach_async(cls, sweep_id: str, *, client: Client | None = None) -> "Sweep":
        """The sweep ``sweep_id`` as stored on the server (e.g. after a kernel restart)."""
        c = client or default_client()
        return await run_async(cls._attach_on_loop(c, cls._check_id(sweep_id)))

    attach = blocking_classmethod(attach_async)

    @staticmethod
    def _check_id(sweep_id: Any) -> str:
        if isinstance(sweep_id, Sweep):
            return sweep_id.id
        if not isinstance(sweep_id, str) or not sweep_id.isalnum():
            raise TypeError(f"Sweep.attach() needs a sweep id string, not {sweep_id!r}")
        return sweep_id

    @classmethod
    async def _attach_on_loop(cls, client: Client, sweep_id: str) -> "Sweep":
        try:
            head, body = await client._ask(f"reading sweep {sweep_id}", lambda b: load_record(b, sweep_id))
        except SweepNotFoundError as exc:
            if not store_note(client):
                raise
            raise SweepNotFoundError(unknown_id_message(client, f"no sweep with id {sweep_id!r}")) from exc
        futs = await attach_many(client, body["job_ids"])
        for f in futs:
            if not f.done() and not f.record:  # neither a status nor a result: nothing was stored
                f._apply_failure(
                    JobNotFoundError(
                        f"job {f.job_id} of sweep {sweep_id} is not on the server: its submit was interrupted, "
                        "or its records expired (retry_failed() sends it again)"
                    )
                )
        return cls(client, head, body, futs)

    # --- live updates ----------------------------------------------------------------------------
    def on_update(self, cb: Callable[["Sweep", int], None]) -> Callable[[], None]:
        """Call ``cb(sweep, index)`` on naq_nb's loop thread when point ``index`` changes; returns unsubscribe."""
        self._listeners.append(cb)

        def unsubscribe() -> None:
            if cb in self._listeners:
                self._listeners.remove(cb)

        return unsubscribe

    def _watch(self, indices: Iterable[int]) -> None:
        for i in indices:
            old = self._unsubs[i]
            if old is not None:  # a retried point: its old future no longer reports here
                old()
            self._unsubs[i] = self.futures[i].on_update(functools.partial(self._changed, i))

    def _changed(self, i: int, fut: JobFuture) -> None:
        if self.futures[i] is not fut:
            return  # a point replaced by retry_failed
        for cb in list(self._listeners):
            cb(self, i)

    # --- waiting and results ------------------------------------------------------------------------
    def done(self) -> bool:
        """True when every point has ended (succeeded, failed or cancelled)."""
        return all(f.done() for f in self.futures)

    def wait(self, timeout: float | None = None) -> "Sweep":
        """Block until every point ended; ``TimeoutError`` after ``timeout`` seconds. Returns the sweep."""
        timeout = check_timeout(timeout, "wait(timeout=...)")
        refuse_wait_on_loop_thread(self.futures, timeout)
        _, pending = concurrent.futures.wait(self.futures, timeout)
        if pending:
            raise TimeoutError(f"{len(pending)} of {len(self)} sweep points did not finish within {timeout:g}s")
        _flush_displays()
        return self

    async def wait_async(self, timeout: float | None = None) -> "Sweep":
        """Async form of :meth:`wait` (awaitable from any event loop)."""
        timeout = check_timeout(timeout, "wait_async(timeout=...)")
        await _all_done(self.futures, timeout)
        _flush_displays()
        return self

    def __await__(self) -> Generator[Any, None, "Sweep"]:
        return self.wait_async().__await__()

    def results(self, timeout: float | None = None, errors: str = "raise") -> list[Any]:
        """Every point's result in point order, after waiting.

        ``errors="raise"`` raises the first failed point's exception;
        ``errors="return"`` puts the exception object in its place.
        """
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', not {errors!r}")
        self.wait(timeout)
        out = []
        for f in self.futures:
            exc = (
                concurrent.futures.CancelledError(f"job {f.job_id} was cancelled") if f.cancelled() else f.exception(0)
            )
            if exc is not None and errors == "raise":
                raise exc
            out.append(exc if exc is not None else f.result(0))
        return out

    def counts(self) -> dict[str, int]:
        """Number of points per status."""
        out: dict[str, int] = {}
        for f in self.futures:
            out[f.status] = out.get(f.status, 0) + 1
        return out

    # --- the table ------------------------------------------------------------------------------------
    def to_dataframe(self) -> "pd.DataFrame":
        """One row per point, in point order: the parameters, the result (a dict result becomes
        columns), status, duration, attempts, error and job id. Every name is used once: a result
        key clashing with another column gets a ``result.`` prefix, a job column clashing with a
        parameter a ``job.`` prefix. Points not finished yet have no result."""
        return sweep_frame(self.points, self.futures)

    # --- control ------------------------------------------------------------------------------------------
    def _function(self) -> Callable:
        if self._fn is None:
            try:
                self._fn = cloudpickle.loads(self._fn_bytes)
            except Exception as exc:
                raise RuntimeError(
                    f"the function of sweep {self.id} cannot be loaded here "
                    f"({type(exc).__name__}: {exc}); attach it where its module imports"
                ) from None
        return self._fn

    def retry_failed(self) -> int:
        """Resubmit only the failed and cancelled points (new jobs, the record updated); returns how many."""
        with self._lock:
            idx = [i for i, f in enumerate(self.futures) if f.done() and (f.cancelled() or f.exception(0) is not None)]
            if not idx:
                return 0
            fn = self._function()
            futs, _ = run_sync(
                _submit(
                    self.client,
                    fn,
                    function_key(fn, self._fn_bytes),
                    self.points,
                    idx,
                    self._digests,
                    self._options,
                    False,
                )
            )
            for i in idx:
                self.futures[i] = futs[i]
            self._watch(idx)
            self._head = run_sync(self._save())
        for i in idx:
            self._changed(i, self.futures[i])
        return len(idx)

    async def _save(self) -> SweepHead:
        body: SweepBody = {
            "points": self.points,
            "job_ids": self.job_ids,
            "digests": self._digests,
            "fn": self._fn_bytes,
            "options": self._options,
        }
        return await self.client._ask(f"storing sweep {self.id}", lambda b: save_record(b, self._head, body))

    async def cancel_async(self) -> int:
        """Cancel every point that has not ended; returns how many were cancelled."""
        pending = [f.job_id for f in self.futures if not f.done()]
        return await run_async(_cancel_many(self.client, pending))

    cancel = blocking(cancel_async)

    # --- display ------------------------------------------------------------------------------------------------
    def summary(self) -> str:
        """One line: ``12/12 succeeded`` or ``7/12 succeeded, 1 failed, 4 running``."""
        return status_summary(self.counts(), len(self))

    def __repr__(self) -> str:
        return f"<Sweep {self.id} {self.name} ({len(self)} points): {self.summary()}>"

    def _repr_html_(self) -> str:
        from .widgets import GroupDisplay

        return GroupDisplay(self).html()  # not shown: a static snapshot (summary, bar, failures)

    def display(self, **kw: Any) -> Any:
        """Show a live :class:`~naq_nb.notebook.widgets.GroupDisplay` of this sweep; returns it."""
        from .widgets import GroupDisplay, install_display_hooks

        install_display_hooks()
        return GroupDisplay(self, **kw).show()

    def _ipython_display_(self) -> None:
        self.display()


async def _cancel_many(client: Client, job_ids: list[str]) -> int:
    sem = asyncio.Semaphore(64)

    async def one(jid: str) -> bool:
        async with sem:
            try:
                return await client.cancel(jid)
            except JobNotFoundError:
                return False

    return sum(await asyncio.gather(*(one(j) for j in job_ids)))


def _flush_displays() -> None:
    display = sys.modules.get("naq_nb.notebook.display")  # never imported here just for this
    if display is not None:
        display.flush_displays()


# --- the calls ----------------------------------------------------------------------------------------------------
def _prepare(
    fn: Callable, grid: Any, options: Any, cache: Any, name: Any, params: dict
) -> tuple[list[dict], JobOptions, SweepHead, SweepBody]:
    points, opts = check_sweep(fn, grid, options, params)
    fn_bytes = function_bytes(fn)
    digests = point_digests(function_key(fn, fn_bytes), points)  # also proves every point pickles
    head: SweepHead = {
        "id": new_job_id(),
        "name": name,
        "function": func_name(fn),
        "created": time.time(),
        "n": len(points),
        "queue": opts.queue,
    }
    body: SweepBody = {"points": points, "digests": digests, "fn": fn_bytes, "options": opts}
    return points, opts, head, body


async def _create(
    client: Client, fn: Callable, points: list[dict], opts: JobOptions, head: SweepHead, body: SweepBody, cache: bool
) -> Sweep:
    key = function_key(fn, body["fn"])
    saved: list[tuple[SweepHead, SweepBody]] = []

    async def record_first(ids: dict[int, str]) -> None:
        # Saved before any job is sent: an interrupted submit (Ctrl-C, a dying kernel) leaves a sweep
        # Sweep.attach() finds, whose points never sent read as not found (retry_failed() sends them).
        full: SweepBody = {**body, "job_ids": [ids[i] for i in range(len(points))]}
        stored = await client._ask(f"storing sweep {head['id']}", lambda b: save_record(b, head, full))
        saved.append((stored, full))

    withdrawn = _Withdrawn()
    try:
        futs, hits = await _submit(
            client, fn, key, points, list(range(len(points))), body["digests"], opts, cache, record_first, withdrawn
        )
    except asyncio.CancelledError:
        if saved:
            say_loudly(withdrawn.line(len(points), head["id"]))
        raise
    head, body = saved[0]
    return Sweep(client, head, body, [futs[i] for i in range(len(points))], hits, fn)


_SWEEP_OPTIONS = ("grid", "options", "cache", "name", "client")


def _own_parameters(fn: Any) -> set[str]:
    """The parameter names ``fn`` declares (``**kwargs`` declares none); empty when it cannot be inspected."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return set()
    return {n for n, p in sig.parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


class Sweeper:
    """Sweeps with fixed options, made by ``nq.sweep.options(...)``: every keyword of the call is then
    a swept parameter of the function (``name``, ``cache``, ``grid`` included)."""

    def __init__(
        self,
        job_options: JobOptions | None = None,
        cache: bool = True,
        name: str | None = None,
        client: Client | None = None,
    ) -> None:
        if not isinstance(cache, bool):
            raise TypeError(f"cache must be True or False, not {cache!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(
                f"name must be a string, not {type(name).__name__} (if your function takes a "
                f"parameter called name, declare it, or use nq.sweep.options(...)(fn, name=[...]))"
            )
        if client is not None and not isinstance(client, Client):
            raise TypeError(f"client must be a naq_nb Client or None, not {type(client).__name__}")
        self.job_options, self.cache, self.name, self.client = job_options or JobOptions(), cache, name, client

    def options(
        self, *, cache: bool | None = None, name: str | None = None, client: Client | None = None, **job_options: Any
    ) -> "Sweeper":
        """A copy with more options: ``cache``, ``name`` (of the sweep), ``client``, and job options
        (``queue``, ``timeout``, ``retry``, ...; unknown names raise ``TypeError``)."""
        return Sweeper(
            JobOptions.build(self.job_options, **job_options),
            self.cache if cache is None else cache,
            self.name if name is None else name,
            self.client if client is None else client,
        )

    async def run_async(self, fn: Callable, grid: list[dict] | None = None, /, **params: Any) -> Sweep:
        """Run the sweep (see :func:`sweep`); returns the live :class:`Sweep`."""
        points, opts, head, body = _prepare(fn, grid, self.job_options, self.cache, self.name, params)
        return await run_async(_create(self.client or default_client(), fn, points, opts, head, body, self.cache))

    run = blocking(run_async)
    __call__ = run  # nq.sweep.options(...)(fn, ...)

    def __repr__(self) -> str:
        return f"<naq_nb.Sweeper cache={self.cache} name={self.name!r} {self.job_options}>"


def _sweeper(fn: Any, grid: Any, kwargs: dict) -> tuple[Sweeper, Any, dict]:
    """Keywords naming sweep options that ``fn`` does not declare are options; the rest are parameters."""
    own = _own_parameters(fn)
    opts = {k: kwargs.pop(k) for k in _SWEEP_OPTIONS if k in kwargs and k not in own}
    if "grid" in opts:
        if grid is not None:
            raise TypeError("grid given twice (positionally and as grid=...)")
        grid = opts.pop("grid")
    sweeper = Sweeper(job_options(opts.get("options")), opts.get("cache", True), opts.get("name"), opts.get("client"))
    return sweeper, grid, kwargs


async def sweep_async(fn: Callable, grid: list[dict] | None = None, /, **kwargs: Any) -> Sweep:
    """Run ``fn(**point)`` for every point of a parameter grid; returns a live :class:`Sweep`.

    ``sweep(train, lr=[1e-3, 1e-2], depth=[2, 4])`` runs the cartesian product
    (4 jobs); ``sweep(train, [{"lr": 1e-3, "depth": 2}, ...])`` runs the given
    points. Options go apart, so they never shadow a parameter:
    ``nq.sweep.options(queue="gpu", timeout=60, name="run", cache=False)(train, lr=[...])``.
    (``options=``, ``cache=``, ``name=``, ``grid=`` and ``client=`` are still read
    as options when ``fn`` has no parameter of that name.) With ``cache=True`` a
    point whose same call (same function pickle, same arguments) already
    succeeded and whose result still exists is reused, not rerun. Bad input
    raises at the call and nothing is submitted; so does a sweep of more than
    ``MAX_SWEEP_POINTS`` (1,000,000) points.
    """
    sweeper, grid, params = _sweeper(fn, grid, dict(kwargs))
    return await sweeper.run_async(fn, grid, **params)


sweep = blocking(sweep_async)


def _options(**kw: Any) -> Sweeper:
    return Sweeper().options(**kw)


_options.__doc__ = Sweeper.options.__doc__
sweep.options = _options  # type: ignore[attr-defined]  # nq.sweep.options(...)(fn, ...)
