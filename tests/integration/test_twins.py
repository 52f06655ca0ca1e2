"""One rule for sync/async twins, made by one mechanism (naq_nb/client/twins.py).

The walk checks the public API of the client and notebook layers, naq's module
paths and the core: every public coroutine has its generated blocking twin, no
blocking ``_sync`` is written by hand, and ``_async`` names exist only where
the notebook rule documents them. The behaviour tests run generated forms from
a plain thread, inside a running loop (as in Jupyter) and from a foreign loop.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import threading
import types
from typing import Any, Iterable, Iterator

import pytest

import naq_nb
from naq_nb.client.twins import ASYNC_SUFFIX_NAMES, blocking, blocking_name, in_thread, is_twin_form, on_loop

# Blocking by nature, with an awaitable `_async` form that waits on the caller's loop: the Future protocol
# (a done future answers without a hop to naq_nb's loop; `concurrent.futures.wait` semantics for groups).
FUTURE_PROTOCOL = {"JobFuture.result", "JobFuture.exception", "JobFuture.cancel", "JobGroup.results",
                   "wait", "gather", "as_completed", "Sweep.wait"}
# `_sync` names that are not generated twins: the mechanism's own primitive (client/loop.py), and naq's
# services, which run on a loop of their own in the calling thread (asyncio.run, signal handlers).
# Client.enqueue_jobs_sync hands a plain job over in the caller's thread (no loop hop), so it is written out.
NOT_TWINS_SYNC = {"run_sync", "Worker.run_sync", "Scheduler.run_sync", "Client.enqueue_jobs_sync"}
# Coroutines without a blocking twin, and why.
ASYNC_ONLY = {
    "Client.broker": "the connection itself, used on the loop thread only",
    "Client.broker_here": "the caller loop's own connection, for coroutines already on that loop",
    "get_nats_connection": "naq's raw-connection helpers are async only in naq too",
    "get_jetstream_context": "as above",
    "close_nats_connection": "as above",
}
# `_async` names that are not twins: the mechanism's primitive, and nats-py's name for a publish that
# returns the ack future.
NOT_TWINS = {"run_async", "Broker.publish_async"}


def _modules() -> list[Any]:
    mods = [naq_nb]
    for sub in ("client", "notebook", "core"):
        pkg = importlib.import_module(f"naq_nb.{sub}")
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name == "procmain":  # a script run by path in job processes
                continue
            mods.append(importlib.import_module(f"naq_nb.{sub}.{info.name}"))
    for shim in ("queue", "worker", "scheduler", "connection"):
        mods.append(importlib.import_module(f"naq_nb.{shim}"))
    return mods


def _members(obj: Any, owner_name: str = "") -> Iterator[tuple[str, Any]]:
    for attr, raw in vars(obj).items():
        if not attr.startswith("_"):
            value = getattr(obj, attr, raw)
            if callable(value):
                yield (f"{owner_name}.{attr}" if owner_name else attr), value


def _public() -> Iterator[tuple[str, str, Any, Any]]:
    """(module, qualified name, object, owner) for every public function and class attribute, in the module
    that defines it."""
    for mod in _modules():
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isclass(obj):
                for qual, value in _members(obj, obj.__name__):
                    yield mod.__name__, qual, value, obj
            elif callable(obj):
                yield mod.__name__, name, obj, mod


def _api() -> Iterator[tuple[str, str, Any, Any]]:
    """The user API: the ``nq.*`` namespace, naq's module paths, and the classes they give (with their methods)."""
    from naq_nb.notebook.dashboard import Dashboard
    from naq_nb.notebook.sweep import Sweeper
    spaces = [naq_nb] + [importlib.import_module(f"naq_nb.{m}") for m in ("queue", "worker", "scheduler", "connection")]
    # dir + getattr: the nq namespace loads some names lazily (module __getattr__)
    objs = {id(o): o for sp in spaces for n in dir(sp) if not n.startswith("_") for o in [getattr(sp, n)]}
    objs.update({id(Dashboard): Dashboard, id(Sweeper): Sweeper})
    api = {id(o) for o in objs.values()} | {id(v) for o in objs.values() if inspect.isclass(o) for _, v in _members(o)}
    classes = {id(o) for o in objs.values() if inspect.isclass(o)}
    for item in _public():
        _, _, obj, owner = item
        if id(obj) in api and (owner in classes or not inspect.isclass(owner)) or id(owner) in classes:
            yield item


def _is_coroutine(obj: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(obj, "__func__", obj))


def _source(form: Any) -> Any:
    fn = getattr(form, "__func__", form)
    return getattr(fn, "__naq_blocking_of__", None)


def _missing_twins(items: Iterable[tuple[str, str, Any, Any]]) -> list[str]:
    missing = []
    for module, qual, obj, owner in items:
        short = qual.rsplit(".", 1)[-1]
        if not _is_coroutine(obj) or short.endswith("_async") or qual in ASYNC_ONLY or is_twin_form(obj):
            continue
        twin_form = getattr(owner, blocking_name(short), None)
        written_out = qual.rsplit(".", 1)[0] + "." + blocking_name(short) in NOT_TWINS_SYNC
        if twin_form is None or not (is_twin_form(twin_form) or written_out):
            missing.append(f"{module}: {qual} has no {blocking_name(short)} made by twins.blocking")
    return missing


def _hand_written(items: Iterable[tuple[str, str, Any, Any]]) -> list[str]:
    return [f"{module}: {qual}" for module, qual, obj, _ in items
            if qual.endswith("_sync") and qual not in NOT_TWINS_SYNC and not is_twin_form(obj)]


def _stray_async(items: Iterable[tuple[str, str, Any, Any]]) -> list[str]:
    wrong = []
    for module, qual, obj, owner in items:
        if not qual.endswith("_async") or qual in NOT_TWINS:
            continue
        if qual not in ASYNC_SUFFIX_NAMES:
            wrong.append(f"{module}: {qual} is not in twins.ASYNC_SUFFIX_NAMES (the rule: x awaitable, x_sync)")
            continue
        base = qual[: -len("_async")]
        partner = getattr(owner, base.rsplit(".", 1)[-1], None)
        made = is_twin_form(obj) or (partner is not None and is_twin_form(partner))
        if partner is None or not (made or base in FUTURE_PROTOCOL):
            wrong.append(f"{module}: {qual} and {base} are not one twin made by twins.py")
    return wrong


def test_every_public_coroutine_has_its_generated_blocking_twin() -> None:
    missing = _missing_twins(_api())
    assert not missing, "\n".join(missing)


def test_no_hand_written_sync_form() -> None:
    hand = _hand_written(_public())
    assert not hand, "hand-written blocking forms (use twins.blocking):\n" + "\n".join(hand)


def test_async_names_only_where_documented() -> None:
    wrong = _stray_async(_public())
    assert not wrong, "\n".join(wrong)


def test_the_checks_catch_each_breach() -> None:
    # A module breaking the rule three ways: each check names its breach.
    bad = types.ModuleType("naq_nb_bad")

    async def fetch(x: int) -> int:
        return x

    def fetch_sync(x: int) -> int:  # a hand copy
        return x

    async def lonely(x: int) -> int:
        return x

    async def peek_async() -> None:
        return None

    for f in (fetch, fetch_sync, lonely, peek_async):
        setattr(bad, f.__name__, f)
    items = [("naq_nb_bad", n, f, bad) for n, f in vars(bad).items() if callable(f)]
    assert _missing_twins(items) == ["naq_nb_bad: fetch has no fetch_sync made by twins.blocking",
                                     "naq_nb_bad: lonely has no lonely_sync made by twins.blocking"]
    assert _hand_written(items) == ["naq_nb_bad: fetch_sync"]
    assert [w.split(" is ")[0] for w in _stray_async(items)] == ["naq_nb_bad: peek_async"]
    bad.fetch_sync = blocking(fetch)
    items = [("naq_nb_bad", n, f, bad) for n, f in vars(bad).items() if callable(f)]
    assert _hand_written(items) == [] and _missing_twins(items) == ["naq_nb_bad: lonely has no lonely_sync "
                                                                    "made by twins.blocking"]


def test_exemption_lists_name_real_members() -> None:
    # A stale entry would hide nothing today and excuse a breach tomorrow.
    api = {qual for _, qual, obj, _ in _api() if _is_coroutine(obj)}
    public = {qual for _, qual, _, _ in _public()}
    assert set(ASYNC_ONLY) <= api, sorted(set(ASYNC_ONLY) - api)
    assert NOT_TWINS | NOT_TWINS_SYNC <= public, sorted((NOT_TWINS | NOT_TWINS_SYNC) - public)
    assert {f"{b}_async" for b in FUTURE_PROTOCOL} <= ASYNC_SUFFIX_NAMES


def test_documented_async_names_exist() -> None:
    found = {qual for _, qual, _, _ in _public() if qual.endswith("_async")}
    assert ASYNC_SUFFIX_NAMES <= found, sorted(ASYNC_SUFFIX_NAMES - found)


def test_an_awaitable_form_a_doc_names_is_in_the_nq_namespace_too() -> None:
    # nq.dashboard's doc said "Awaitable form: ``dashboard_async``", but nq.dashboard_async did not exist.
    import re
    missing = []
    for name in dir(naq_nb):
        obj = getattr(naq_nb, name)
        if inspect.isclass(obj) or not callable(obj):
            continue
        for other in re.findall(r"Awaitable form: ``(\w+)``", obj.__doc__ or ""):
            if not hasattr(naq_nb, other):
                missing.append(f"nq.{name} names nq.{other}")
    assert not missing, missing


def test_generated_forms_carry_name_doc_and_signature() -> None:
    bad = []
    for module, qual, obj, _ in _public():
        if not is_twin_form(obj):
            continue
        fn = getattr(obj, "__func__", obj)
        src = _source(obj) or fn.__naq_in_thread_of__
        src = getattr(src, "__func__", src)
        alias = fn.__module__ != module  # e.g. naq's Job.fetch_result_sync is fetch_job_result_sync
        if fn.__name__ != qual.rsplit(".", 1)[-1] and not alias:
            bad.append(f"{qual}: __name__ {fn.__name__!r}")
        if inspect.signature(fn) != inspect.signature(src):
            bad.append(f"{qual}: signature {inspect.signature(fn)} != {inspect.signature(src)}")
        if src.__doc__ and inspect.cleandoc(src.__doc__).splitlines()[0] not in (fn.__doc__ or ""):
            bad.append(f"{qual}: doc lost")
    assert not bad, "\n".join(bad)


def test_documented_user_names_keep_their_kind() -> None:
    # The names users type (README, BRIEF, notebooks): blocking ones block, awaitable ones are coroutines.
    import naq_nb as nq
    for name in ("submit", "map", "job", "connect", "local", "sweep", "dashboard", "jobs", "workers",
                 "schedules", "failed", "put", "get_object", "enqueue_sync", "enqueue_at_sync", "enqueue_in_sync",
                 "schedule_sync", "fetch_job_result_sync", "list_scheduled_sync"):
        assert not _is_coroutine(getattr(nq, name)), name
    for name in ("submit_async", "map_async", "local_async", "enqueue", "enqueue_at", "schedule",
                 "fetch_job_result", "list_scheduled"):
        assert _is_coroutine(getattr(nq, name)), name
    assert not _is_coroutine(nq.Queue.enqueue_sync) and _is_coroutine(nq.Queue.enqueue)


# --- the mechanism: where the forms can be called from --------------------------------------------------

async def _where(x: int, *, step: int = 1) -> tuple[int, str]:
    """Adds ``step``; says which thread ran it."""
    await asyncio.sleep(0)
    return x + step, threading.current_thread().name


_where_sync = blocking(_where)


class _Thing:
    async def add(self, x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    add_sync = blocking(add)

    @classmethod
    async def make_async(cls, x: int) -> int:
        return x * 2

    make = blocking(make_async)

    def stop(self, x: int) -> str:
        return threading.current_thread().name + f":{x}"

    stop_async = in_thread(stop)

    @on_loop
    async def where(self) -> str:
        return threading.current_thread().name

    where_sync = blocking(where)


def test_blocking_form_names_and_signature() -> None:
    assert _where_sync.__name__ == "_where_sync"
    assert str(inspect.signature(_where_sync)) == "(x: 'int', *, step: 'int' = 1) -> 'tuple[int, str]'"
    assert "Adds ``step``" in _where_sync.__doc__
    assert _Thing.add_sync.__qualname__ == "_Thing.add_sync"
    assert _Thing.make.__name__ == "make" and "Awaitable form: ``make_async``" in _Thing.make.__doc__
    assert _Thing.stop_async.__name__ == "stop_async" and inspect.iscoroutinefunction(_Thing.stop_async)
    assert not inspect.iscoroutinefunction(_Thing.add_sync)


def test_blocking_form_from_a_plain_thread() -> None:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append((_where_sync(1, step=2), _Thing().add_sync(1), _Thing.make(3),
                                                    _Thing().where_sync())))
    t.start()
    t.join(30)
    assert out == [((3, "naq-loop"), 2, 6, "naq-loop")]


def test_blocking_form_inside_a_running_loop() -> None:
    async def cell() -> Any:  # a Jupyter cell: a sync call while the kernel's loop runs
        return _where_sync(1), _Thing().add_sync(2)
    assert asyncio.run(cell()) == ((2, "naq-loop"), 3)


def test_async_forms_from_a_foreign_loop() -> None:
    async def main() -> Any:
        return await _where(5), await _Thing.make_async(2), await _Thing().stop_async(7), await _Thing().where()
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(asyncio.run(main())), name="foreign")
    t.start()
    t.join(30)
    value, thread = out[0][0]
    assert value == 6 and thread == "foreign"  # an own coroutine: runs on the caller's loop
    assert out[0][1] == 4 and out[0][2].endswith(":7") and not out[0][2].startswith("foreign")
    assert out[0][3] == "naq-loop"  # an @on_loop coroutine hops to naq_nb's loop


def test_blocking_form_raises_the_coroutines_exception() -> None:
    async def bad(x: int) -> None:
        raise KeyError(x)
    with pytest.raises(KeyError):
        blocking(bad)(1)


# --- generated forms of the real API against a server ---------------------------------------------------

def _double(x: int) -> int:
    return 2 * x


def test_naq_api_forms_from_thread_loop_and_foreign_loop(settings) -> None:
    from naq_nb import Queue, close_sync_connections, enqueue, get_job_status, get_job_status_sync
    url = settings.nats_url
    q = Queue("twins", url)
    try:
        ids: list[str] = []
        t = threading.Thread(target=lambda: ids.append(q.enqueue_sync(_double, 1).job_id))
        t.start()
        t.join(30)

        async def cell() -> str:  # sync calls inside a running loop
            return q.enqueue_sync(_double, 2).job_id
        ids.append(asyncio.run(cell()))

        async def foreign() -> tuple[str, dict]:  # async forms awaited on a loop that is not naq_nb's
            job = await enqueue(_double, 3, queue_name="twins", nats_url=url)
            return job.job_id, await get_job_status(job, nats_url=url)
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(asyncio.run(foreign())))
        t.start()
        t.join(30)
        ids.append(out[0][0])
        assert out[0][1]["status"] == "queued"
        assert len(set(ids)) == 3
        assert [get_job_status_sync(i, nats_url=url)["status"] for i in ids] == ["queued"] * 3
        assert q.count_sync() == 3
        assert q.purge_sync() == 3
    finally:
        close_sync_connections()
