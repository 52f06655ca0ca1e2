"""The dashboard's buttons: Requeue per failed job, Pause/Resume per schedule, Details per recent
job. A mixin of :class:`~naq_nb.notebook.dashboard.Dashboard`: each action runs on the kernel's thread
(ipywidgets calls it there), acts through the client, and hands what it learned to the dashboard's
loop, which owns the view's state.
"""

from __future__ import annotations

import collections
import html
from typing import TYPE_CHECKING, Callable

from ..client.loop import get_loop_thread, run_sync
from .dashboard_detail import detail_html, fetch_detail

if TYPE_CHECKING:
    from ..client.client import Client

__all__ = ["DashboardActions"]


class DashboardActions:
    """The button half of the dashboard; every field below is set by ``Dashboard.__init__`` (``_recent`` by
    ``DashboardState._init_state``, ``dashboard_state.py``)."""

    client: Client
    _view: dict
    _recent: collections.OrderedDict[str, dict]
    _message: str
    _failed_stale: bool
    _detail: str

    def _poke(self) -> None:
        raise NotImplementedError  # Dashboard's: a redraw soon

    def _on_loop(self, fn: Callable[[], None]) -> None:
        get_loop_thread().loop.call_soon_threadsafe(fn)

    def _say(self, message: str) -> None:
        def apply() -> None:
            self._message = message
            self._poke()

        self._on_loop(apply)

    def _requeue(self, key: str) -> None:
        row = next((f for f in self._view.get("failed", []) if f["_key"] == key), None)
        if row is None:
            self._say(f"{key} is no longer in the failed list")
            return
        try:
            job_id = self.client.requeue_sync(row["_seq"])
            self._say(f"requeued {job_id}")
        except Exception as exc:  # shown to the user on the dashboard
            self._say(f"requeue of {key} failed: {type(exc).__name__}: {exc}")
        self._on_loop(self._mark_failed_stale)

    def _mark_failed_stale(self) -> None:
        self._failed_stale = True
        self._poke()

    def _toggle_schedule(self, schedule_id: str, pause: bool) -> None:
        from ..client.scheduling import pause_scheduled_job_sync, resume_scheduled_job_sync

        try:
            (pause_scheduled_job_sync if pause else resume_scheduled_job_sync)(schedule_id, client=self.client)
            self._say(f"{'paused' if pause else 'resumed'} {schedule_id}")
        except Exception as exc:  # shown to the user on the dashboard
            self._say(f"{'pause' if pause else 'resume'} of {schedule_id} failed: {type(exc).__name__}: {exc}")

    def _show_detail(self, job_id: str) -> None:
        """Details of one job under the recent list: arguments, timings, logs, error and traceback."""
        try:
            rec, tb = run_sync(fetch_detail(self.client, job_id))
            text = detail_html(job_id, {**self._recent.get(job_id, {}), **rec}, tb)
        except Exception as exc:  # shown to the user on the dashboard; the message may quote stored text
            text = f"<p><i>{html.escape(f'details of {job_id}: {type(exc).__name__}: {exc}')}</i></p>"

        def apply() -> None:
            self._detail = text
            self._poke()

        self._on_loop(apply)
