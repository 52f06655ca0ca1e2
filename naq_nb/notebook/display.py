"""Live displays: one output kept up to date from background updates, throttled.

A :class:`LiveDisplay` is ONE output: a mimebundle holding the ipywidgets view
(inside a kernel), ``text/html`` and ``text/plain`` of the current state, shown
with ``display(..., display_id=True)`` and replaced with
``update_display_data``. A frontend with widgets shows the widget (fed by
trait changes); a notebook executed by nbclient/nbval (no widget manager)
saves the text forms, so its outputs hold the true end state, not "VBox()".
Once everything shown has ended, the output is replaced by the static
text/html + text/plain (no widget view) and the widget is closed: a notebook
saved by JupyterLab then reopens with each display's final state, never
"Error displaying widget: model not found" (the widget models are not saved).

Updates come from :meth:`JobFuture.on_update` on naq_nb's loop thread. Widget
traits change at most every ``interval`` (0.1 s); the bundle, whose
replacement makes a frontend re-render the output, at most every
``text_interval`` (1 s); both at once when everything shown has ended. After
each cell (the hook :func:`register_cell_hooks` adds) and in ``Sweep.wait``,
:func:`flush_displays` sends any state not shown yet, so a cell that waited for
a result ends with the final state in its outputs instead of racing the loop
thread; an update sent while no cell ran is sent again when the next cell
starts (addressed to a finished cell, nbclient would drop it). Nothing here prints; outside
IPython a display is only its ``repr``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import threading
import time
from typing import Any, Callable

__all__ = [
    "Throttle",
    "LiveDisplay",
    "register_cell_hooks",
    "unregister_cell_hooks",
    "flush_displays",
    "ipython_shell",
    "kernel_shell",
    "WIDGET_MIME",
]

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
log = logging.getLogger("naq_nb.display")


def _default_call_later(delay: float, fn: Callable[[], None]) -> Any:
    try:
        return asyncio.get_running_loop().call_later(delay, fn)  # on naq_nb's loop thread
    except RuntimeError:
        from ..client.loop import get_loop_thread

        loop = get_loop_thread().loop
        return loop.call_soon_threadsafe(loop.call_later, max(0.0, delay), fn)


class Throttle:
    """Calls ``render`` at most once per ``interval`` (by ``clock``); at once when ``final``.

    A poke inside the interval schedules ONE trailing render (``call_later(delay,
    fn)``), so the last change is always shown. Clock and timer are injectable,
    so tests need no wall time.
    """

    def __init__(
        self,
        render: Callable[[], None],
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        call_later: Callable[[float, Callable[[], None]], Any] | None = None,
    ) -> None:
        self.render, self.interval, self.clock = render, interval, clock
        self.call_later = call_later or _default_call_later
        self._last = -math.inf
        self._timer = False
        self._lock = threading.Lock()

    def poke(self, final: bool = False) -> None:
        """Something changed: render now, or once the interval since the last render is over."""
        with self._lock:
            now = self.clock()
            due = final or now - self._last >= self.interval
            schedule = not due and not self._timer
            if due:
                self._last = now
            elif schedule:
                self._timer = True
        if due:
            self.render()
        elif schedule:
            self.call_later(self._last + self.interval - now, self._fire)

    def _fire(self) -> None:
        with self._lock:
            self._timer = False
            self._last = self.clock()
        self.render()


def ipython_shell() -> Any | None:
    """The running IPython shell, or None (plain Python)."""
    try:
        from IPython.core.interactiveshell import InteractiveShell
    except ImportError:
        return None
    return InteractiveShell.instance() if InteractiveShell.initialized() else None


def kernel_shell() -> Any | None:
    """The IPython shell when it runs in a Jupyter kernel (a widget frontend may exist), else None."""
    shell = ipython_shell()
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None


_LIVE: set["LiveDisplay"] = set()  # displays not yet terminal (flushed after each cell)
_IDLE_SENT: set["LiveDisplay"] = set()  # updates sent while no cell ran: sent again in the next cell
_LIVE_LOCK = threading.Lock()
_cell = {"running": False}


class LiveDisplay:
    """Base of :class:`~naq_nb.notebook.widgets.JobDisplay` and ``SweepDisplay``.

    Subclasses implement ``terminal()``, ``text()``, ``html()``, ``_subscribe()``
    (returns an unsubscribe function) and optionally ``_make_widget()`` /
    ``_update_widget()``. ``publish(bundle, update)`` replaces IPython (tests).
    """

    def __init__(
        self,
        *,
        interval: float = 0.1,
        text_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        call_later: Callable[[float, Callable[[], None]], Any] | None = None,
        widget: bool | None = None,
        publish: Callable[[dict, bool], Any] | None = None,
    ) -> None:
        self.clock, self.text_interval = clock, text_interval
        self.throttle = Throttle(self._render, interval, clock, call_later)
        self._want_widget, self._publish = widget, publish
        self.widget: Any = None
        self.handle: Any = None
        self.shown = False
        self.renders = 0  # refreshes (widget traits)
        self.updates = 0  # update_display_data messages sent
        self._sent: dict | None = None
        self._sent_at = -math.inf
        self._rlock = threading.RLock()
        self._unsubscribe: Callable[[], None] | None = None

    def terminal(self) -> bool:
        raise NotImplementedError

    def text(self) -> str:
        raise NotImplementedError

    def html(self) -> str:
        raise NotImplementedError

    def _subscribe(self) -> Callable[[], None]:
        raise NotImplementedError

    def _make_widget(self) -> Any:
        return None

    def _update_widget(self) -> None:
        pass

    def mimebundle(self, final: bool = False) -> dict:
        """The current state: text/plain + text/html (+ the widget view while not ``final``)."""
        bundle: dict[str, Any] = {"text/plain": self.text(), "text/html": self.html()}
        if self.widget is not None and not final:
            bundle[WIDGET_MIME] = {"version_major": 2, "version_minor": 0, "model_id": self.widget.model_id}
        return bundle

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict:
        return {"text/plain": self.text(), "text/html": self.html()}

    def __repr__(self) -> str:
        return self.text()

    # --- showing -----------------------------------------------------------------------------
    def show(self) -> "LiveDisplay":
        """Display it and follow its updates (outside IPython: nothing is sent, ``repr`` stays)."""
        if self.shown:
            return self
        if self._publish is None and ipython_shell() is None:
            return self
        want = (
            self._want_widget
            if self._want_widget is not None
            else (self._publish is None and kernel_shell() is not None)
        )
        if want and not self.terminal():  # an ended display is static from the start
            try:
                self.widget = self._make_widget()
                self._update_widget()
            except ImportError:  # ipywidgets not installed: the text forms are the display
                self.widget = None
        with self._rlock:
            self._sent, self._sent_at = self.mimebundle(), self.clock()
            self.shown = True
            if self._publish is not None:
                self.handle = self._publish(self._sent, False)
            else:
                from IPython.display import display

                self.handle = display(self._sent, raw=True, display_id=True)
        self._unsubscribe = self._subscribe()
        if not self.terminal():
            with _LIVE_LOCK:
                _LIVE.add(self)
        self.poke()  # a change between the snapshot above and the subscription
        return self

    def close(self) -> None:
        """Stop following updates (the output keeps its last state)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def poke(self) -> None:
        """Called on every change (any thread): a throttled refresh, immediate once terminal."""
        if not self.shown:
            return
        terminal = self.terminal()
        if not terminal:
            with _LIVE_LOCK:
                _LIVE.add(self)  # e.g. a sweep whose failed points were resubmitted
        self.throttle.poke(final=terminal)

    def flush(self) -> None:
        """Send the current state now if it differs from the one shown."""
        self._render(force=True)

    def resend(self) -> None:
        """Send the current state again, changed or not (see :func:`_pre_run_cell`)."""
        with self._rlock:
            if self.shown:
                self._send(self.mimebundle(final=self.terminal()))

    def _render(self, force: bool = False) -> None:
        with self._rlock:
            self.renders += 1
            terminal = self.terminal()
            if self.widget is not None and not terminal:
                try:
                    self._update_widget()
                except Exception:  # a closed comm must not break the job's callbacks
                    self.widget = None
            if terminal or force or self.clock() - self._sent_at >= self.text_interval:
                bundle = self.mimebundle(final=terminal)
                if bundle != self._sent:
                    self._send(bundle)
            if terminal:
                self._retire_widget()
        if terminal:
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def _retire_widget(self) -> None:
        """The output now shows the static final state: the widget (and its comm) can go."""
        w, self.widget = self.widget, None
        if w is not None:
            try:
                close_widget_tree(w)
            except Exception as exc:  # a kernel shutting down: the comm may be gone already
                log.debug("closing a finished display's widget: %s", exc)

    def _send(self, bundle: dict) -> None:
        if self._publish is None and (self.handle is None or kernel_shell() is None):
            return  # a terminal IPython would PRINT every update (from the loop thread): it keeps the first
        self._sent, self._sent_at = bundle, self.clock()
        self.updates += 1
        if self._publish is not None:
            self._publish(bundle, True)
        else:
            if not _cell["running"]:
                with _LIVE_LOCK:
                    _IDLE_SENT.add(self)
            # An empty context: ipykernel then addresses the message to the cell running NOW;
            # the loop thread's inherited context may name a long-finished cell, whose
            # messages nbclient (and frontends) no longer read.
            contextvars.Context().run(self.handle.update, bundle, raw=True)


def close_widget_tree(root: Any) -> None:
    """Close ``root`` and every widget it holds (children, layouts, styles), the container first so
    no view of it is left showing a closed part.

    ``Widget.close()`` closes one model only: each part left open keeps its comm and its model in
    the kernel (and the frontend) for the rest of the session, about ten per finished job display.
    The parts are this display's own (ipywidgets makes a layout and style per widget), so none is
    shared with a widget still in use.
    """
    from ipywidgets import Widget

    stack, seen = [root], set()
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen.add(id(w))
        for name in w.keys:  # read before close(), which leaves the traits but drops the comm
            value = getattr(w, name, None)
            stack.extend(v for v in (value if isinstance(value, (list, tuple)) else (value,)) if isinstance(v, Widget))
        w.close()


def flush_displays() -> int:
    """Send the current state of every live display now (where it changed); returns how many are live."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for d in live:
        d.flush()
    return len(live)


def _pre_run_cell(*_args: Any) -> None:
    # An update sent between cells is addressed to a cell that has ended: nbclient drops
    # it (and frontends may). Sent again now, it is addressed to the cell starting.
    _cell["running"] = True
    with _LIVE_LOCK:
        idle = list(_IDLE_SENT)
        _IDLE_SENT.clear()
    for d in idle:
        d.resend()


def _post_run_cell(*_args: Any) -> None:
    flush_displays()  # before the kernel replies: a cell that waited ends with the final state
    _cell["running"] = False


def register_cell_hooks(shell: Any | None = None) -> bool:
    """Flush live displays after each cell (and resend idle updates before the next); idempotent.

    Returns False outside IPython. :func:`~naq_nb.notebook.widgets.install_display_hooks` calls it.
    """
    shell = shell or ipython_shell()
    if shell is None:
        return False
    for event, fn in (("pre_run_cell", _pre_run_cell), ("post_run_cell", _post_run_cell)):
        if fn not in shell.events.callbacks.get(event, []):
            shell.events.register(event, fn)
    _cell["running"] = True  # installed from code that a cell runs
    return True


def unregister_cell_hooks(shell: Any | None = None) -> None:
    """Undo :func:`register_cell_hooks`."""
    shell = shell or ipython_shell()
    if shell is not None:
        for event, fn in (("pre_run_cell", _pre_run_cell), ("post_run_cell", _post_run_cell)):
            if fn in shell.events.callbacks.get(event, []):
                shell.events.unregister(event, fn)
