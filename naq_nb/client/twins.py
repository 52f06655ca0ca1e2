"""Sync and async forms from one coroutine: the one rule and the one mechanism.

Rule (naq's): a twin is written once, as an ``async def x``; ``x`` is the
awaitable form and ``x_sync`` the blocking one. The exception is the notebook
API listed in :data:`ASYNC_SUFFIX_NAMES` (``nq.submit``, ``nq.local``, ...),
where users type the blocking call: there the coroutine is ``x_async`` and the
blocking form is ``x``.

Mechanism: ``x_sync = blocking(x)`` (or ``x = blocking(x_async)``) in a module
or a class body. The blocking form runs the coroutine on naq_nb's background
loop (:func:`~naq_nb.client.loop.run_sync`), so it works the same in a script,
from any thread and inside a running loop (Jupyter). It carries the coroutine's
parameters and hints (``inspect.signature``), its docstring and a name from the
rule. ``@on_loop`` marks a coroutine that uses the client's connection (the
``Client`` methods): its awaitable form runs on the background loop too
(:func:`~naq_nb.client.loop.run_async`), so it can be awaited from any loop. :func:`in_thread` goes the
other way, for a blocking call that starts or stops threads and processes (``local`` -> ``local_async``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any, Callable, Concatenate, Coroutine, ParamSpec, TypeVar

from .loop import run_async, run_sync

__all__ = [
    "on_loop",
    "blocking",
    "blocking_classmethod",
    "in_thread",
    "blocking_name",
    "is_blocking_form",
    "is_twin_form",
    "ASYNC_SUFFIX_NAMES",
]

T = TypeVar("T")
C = TypeVar("C")
P = ParamSpec("P")

# The documented names under the notebook rule (blocking ``x``, awaitable ``x_async``): the ``nq.*`` calls and
# the methods of the objects they return (ARCHITECTURE.md "Sync and async twins"). Any other ``*_async`` is a
# mistake (tests/test_twins.py checks). Future-protocol methods (``JobFuture.result`` ...) are listed in the test:
# they block on the future itself, with no loop hop, and their ``_async`` forms wait on the caller's loop.
ASYNC_SUFFIX_NAMES = frozenset(
    {
        # naq_nb.client.session / objects / group, naq_nb.notebook.frames / sweep / dashboard / local
        "connect_async",
        "submit_async",
        "map_async",
        "job_async",
        "Submitter.submit_async",
        "Submitter.map_async",
        "put_async",
        "get_object_async",
        "delete_object_async",
        "wait_async",
        "gather_async",
        "as_completed_async",
        "JobGroup.results_async",
        "JobGroup.cancel_async",
        "JobFuture.attach_async",
        "JobFuture.result_async",
        "JobFuture.exception_async",
        "JobFuture.cancel_async",
        "jobs_async",
        "workers_async",
        "schedules_async",
        "failed_async",
        "sweep_async",
        "Sweeper.run_async",
        "Sweep.attach_async",
        "Sweep.wait_async",
        "Sweep.cancel_async",
        "dashboard_async",
        "Dashboard.start_async",
        "Dashboard.refresh_now_async",
        "Dashboard.close_async",
        "local_async",
        "LocalCluster.stop_async",
    }
)


def blocking_name(name: str) -> str:
    """The blocking form's name under the rule: ``x_async`` -> ``x``, ``x`` -> ``x_sync``."""
    return name[: -len("_async")] if name.endswith("_async") else f"{name}_sync"


def is_blocking_form(obj: Any) -> bool:
    """True for a callable made by :func:`blocking` (or a method/classmethod wrapping one)."""
    fn = getattr(obj, "__func__", obj)
    return getattr(fn, "__naq_blocking_of__", None) is not None


def blocking(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The blocking form of the coroutine function ``fn`` (also a ``classmethod`` / ``staticmethod``).

    Each call runs ``fn(*args, **kwargs)`` on the background loop and returns its value or raises its
    exception; the form is named by :func:`blocking_name`.
    """
    if isinstance(fn, (classmethod, staticmethod)):
        return type(fn)(blocking(fn.__func__))
    name = blocking_name(fn.__name__)
    run = getattr(fn, "__naq_on_loop_of__", fn)  # run_sync already puts it on the loop: skip the hop

    @functools.wraps(fn)  # __wrapped__: inspect.signature shows fn's parameters and hints
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(run(*args, **kwargs))

    call.__name__ = name
    call.__qualname__ = fn.__qualname__.rsplit(".", 1)[0] + "." + name if "." in fn.__qualname__ else name
    doc = inspect.cleandoc(fn.__doc__ or "")
    if fn.__name__.endswith("_async"):  # the notebook rule: the blocking form is the main one
        call.__doc__ = f"{doc}\n\nAwaitable form: ``{fn.__name__}``.".lstrip()
    else:
        call.__doc__ = (
            f"Blocking form of ``{fn.__name__}``; works in scripts, threads and inside a running event loop.\n\n{doc}"
        ).rstrip()
    call.__naq_blocking_of__ = fn  # type: ignore[attr-defined]
    return call


def blocking_classmethod(fn: Callable[Concatenate[type[C], P], Coroutine[Any, Any, T]]) -> "classmethod[C, P, T]":
    """:func:`blocking` for a ``classmethod`` coroutine, typed so checkers see the bound signature."""
    return blocking(fn)  # type: ignore[return-value]  # fn is the classmethod object at run time


def in_thread(fn: Callable[P, T]) -> Callable[P, Coroutine[Any, Any, T]]:
    """The awaitable form ``x_async`` of a blocking call ``x`` that starts or stops threads and processes
    (``nq.local``, ``LocalCluster.stop``): it must not run on the loop, so it runs in a worker thread
    (``asyncio.to_thread``), off the caller's loop."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    name = f"{fn.__name__}_async"
    call.__name__ = name
    call.__qualname__ = fn.__qualname__.rsplit(".", 1)[0] + "." + name if "." in fn.__qualname__ else name
    call.__doc__ = (
        f"Awaitable form of ``{fn.__name__}`` (runs it in a thread, off the caller's loop).\n\n"
        f"{inspect.cleandoc(fn.__doc__ or '')}"
    ).rstrip()
    call.__naq_in_thread_of__ = fn  # type: ignore[attr-defined]
    return call


def is_twin_form(obj: Any) -> bool:
    """True for a form made by this module: :func:`blocking` or :func:`in_thread`."""
    fn = getattr(obj, "__func__", obj)
    return is_blocking_form(fn) or getattr(fn, "__naq_in_thread_of__", None) is not None


def on_loop(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """The awaitable form of a coroutine that uses the client's connection: it runs on the background loop
    (:func:`~naq_nb.client.loop.run_async`), so it can be awaited from any loop."""

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return await run_async(fn(*args, **kwargs))

    call.__naq_on_loop_of__ = fn  # type: ignore[attr-defined]
    return call
