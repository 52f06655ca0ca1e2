"""Live displays: throttling on an injected clock, final states as text, and a real kernel run by nbclient."""

from __future__ import annotations

import threading

import pytest

import naq_nb as nq
from naq_nb.notebook import widgets as widgets_mod
from naq_nb.notebook.display import WIDGET_MIME, flush_displays
from naq_nb.notebook.widgets import JobDisplay, SweepDisplay

import jobs
from helpers import ROOT, FakeClock, wait_until


class Recorder:
    """Stands in for IPython's display: records the bundle of each display / update."""

    def __init__(self) -> None:
        self.shown: list[dict] = []
        self.updates: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, bundle: dict, update: bool) -> None:
        with self.lock:
            (self.updates if update else self.shown).append(bundle)

    @property
    def last(self) -> dict:
        return (self.updates or self.shown)[-1]


def test_job_display_updates_are_bounded_and_final_state_is_text(nb_client, thread_worker):
    thread_worker(concurrency=2)
    clock, rec = FakeClock(), Recorder()  # the clock never moves: only the final state may pass
    fut = nq.submit(jobs.with_progress, 200)
    d = JobDisplay(fut, clock=clock, call_later=clock.call_later, publish=rec).show()
    assert fut.result(timeout=30) == 200
    wait_until(lambda: "succeeded" in rec.last["text/plain"], timeout=10)
    assert len(rec.updates) <= 2 and d.renders <= 3  # hundreds of progress/log records, at most 3 refreshes
    text, page = rec.last["text/plain"], rec.last["text/html"]
    assert text.startswith(f"naq job jobs.with_progress ({fut.job_id}): succeeded in ")
    assert "result: 200" in text and "log: line 200" in text
    assert "succeeded" in page and "<code>200</code>" in page and "line 200" in page


def test_failed_job_display_shows_the_error(nb_client, thread_worker):
    thread_worker()
    rec = Recorder()
    fut = nq.submit(jobs.boom, "bad thing")
    JobDisplay(fut, publish=rec).show()
    with pytest.raises(ValueError):
        fut.result(timeout=30)
    wait_until(lambda: "failed" in rec.last["text/plain"], timeout=10)
    assert "error: ValueError: bad thing" in rec.last["text/plain"] and "bad thing" in rec.last["text/html"]


MARKUP = "<img src=x onerror=alert(1)>"


def test_markup_from_a_job_is_shown_as_text(nb_client, thread_worker):
    # A job's error, log lines and result are the job's own text: in the page they are text, never markup.
    thread_worker()
    failed, done = Recorder(), Recorder()
    bad = nq.submit(jobs.boom, MARKUP)
    good = nq.submit(jobs.echo_value, MARKUP)
    JobDisplay(bad, publish=failed).show()
    JobDisplay(good, publish=done).show()
    with pytest.raises(ValueError):
        bad.result(timeout=30)
    assert good.result(timeout=30) == MARKUP
    wait_until(lambda: "failed" in failed.last["text/plain"] and "succeeded" in done.last["text/plain"], timeout=10)
    for rec in (failed, done):
        page = rec.last["text/html"]
        assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page, page
    assert MARKUP in failed.last["text/plain"]  # the plain text keeps it as it is


def test_sweep_display_final_counts_and_bounded_table(nb_client, thread_worker):
    thread_worker(concurrency=4)
    rec = Recorder()
    sw = nq.sweep(jobs.add, a=list(range(100)), b=[1])
    d = SweepDisplay(sw, publish=rec, window=20).show()
    sw.wait(timeout=60)
    wait_until(lambda: "100/100 succeeded" in rec.last["text/plain"], timeout=10)
    assert "100/100 succeeded" in rec.last["text/html"]
    assert d.counts == {"succeeded": 100} and d.terminal()
    assert len(d.rows()) == 20  # the window is bounded: 20 of 100 points
    running = [u["text/html"] for u in rec.updates if "100/100" not in u["text/html"]]
    assert all(h.count("<tr>") <= 21 for h in running)  # header + at most 20 rows, never 100
    assert "<tr>" not in rec.last["text/html"] and "naq-done" in rec.last["text/html"]  # collapsed when done
    assert len(rec.updates) < 30  # 300+ status records (queued, running, succeeded) were coalesced


def test_sweep_display_follows_failures_and_retries(nb_client, thread_worker, tmp_path):
    from test_sweep import flaky
    thread_worker(concurrency=2)
    flag = tmp_path / "flag"
    rec = Recorder()
    sw = nq.sweep(flaky, x=[0, 1, 2, 3], flag=[str(flag)])
    d = SweepDisplay(sw, publish=rec).show()
    sw.wait(timeout=30)
    wait_until(lambda: rec.last["text/plain"].count("\n") == 2, timeout=10)  # summary + 2 failures
    assert "2/4 succeeded, 2 failed" in rec.last["text/plain"] and "odd 3" in rec.last["text/plain"]
    flag.touch()
    sw.retry_failed()
    sw.wait(timeout=30)
    wait_until(lambda: "4/4 succeeded" in rec.last["text/plain"], timeout=10)
    assert d.counts.get("failed", 0) == 0 and "failed" not in rec.last["text/plain"]


def _widget_tree(root) -> list:
    """``root`` and every widget model under it (children, layouts, styles)."""
    import ipywidgets
    out, stack = [], [root]
    while stack:
        w = stack.pop()
        out.append(w)
        for name in w.keys:
            v = getattr(w, name)
            stack.extend(x for x in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(x, ipywidgets.Widget))
    return out


def test_a_finished_display_closes_its_whole_widget_tree(nb_client, thread_worker):
    """A display at its final state closed only its container: its ~10 parts (HTML, progress bar,
    layouts, styles) stayed open in the kernel for the rest of the session, per displayed job."""
    pytest.importorskip("ipywidgets")
    job = nq.options(queue="later").submit(jobs.add, 1, 2)
    sw = nq.sweep(jobs.add, a=[1, 2], b=[1], options={"queue": "later"})
    shown = [JobDisplay(job, publish=Recorder(), widget=True).show(),
             SweepDisplay(sw, publish=Recorder(), widget=True).show()]
    trees = [_widget_tree(d.widget) for d in shown]
    assert len(trees[0]) >= 10 and len(trees[1]) >= 3 and all(w.comm is not None for t in trees for w in t)
    thread_worker("later")
    assert job.result(timeout=30) == 3 and sw.wait(timeout=30).done()
    wait_until(lambda: all(d.widget is None for d in shown), timeout=10)
    still_open = [type(w).__name__ for t in trees for w in t if w.comm is not None]
    assert still_open == []


def test_plain_python_display_is_its_repr(nb_client, thread_worker):
    thread_worker()
    fut = nq.submit(jobs.add, 1, 2)
    fut.result(timeout=30)
    d = JobDisplay(fut).show()  # no IPython here: nothing is sent, nothing printed
    assert not d.shown and repr(d).endswith("result: 3") and flush_displays() == 0
    assert d._repr_mimebundle_()["text/html"].startswith("<div class='naq-job'>")


def test_in_process_shell_display_hook(nb_client, thread_worker):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    thread_worker()
    shell = InteractiveShell.instance()
    try:
        assert widgets_mod.install_display_hooks() is True
        shell.user_ns["fut"] = nq.submit(jobs.add, 40, 2)
        with capture_output() as cap:
            shell.run_cell("fut.result(timeout=30); fut")
        texts = [o.data["text/plain"] for o in cap.outputs]
        assert texts and "succeeded" in texts[-1] and texts[-1].endswith("result: 42")
    finally:
        widgets_mod.uninstall_display_hooks()
        InteractiveShell.clear_instance()


def test_notebook_saves_final_states_and_live_progress():
    """A real ipykernel run by nbclient: the saved outputs hold the end states (text/plain and
    text/html), and progress of a job reached the display while a later cell was blocked on it."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    cells = [
        "import naq_nb as nq\nfrom naq_nb.notebook.widgets import install_display_hooks\n"
        "install_display_hooks()\nc = nq.local(workers=2, scheduler=False, store_dir=None)",
        "import time\ndef slow(n):\n    for i in range(n):\n        nq.progress(i + 1, n, f'step {i + 1}')\n"
        "        time.sleep(0.4)\n    return n * 10\njob = nq.submit(slow, 8)\njob",
        "job.result(timeout=60)",
        "sw = nq.sweep(lambda x: {'sq': x * x}, x=[1, 2, 3])\nsw",
        "sw.wait(60).to_dataframe().sq.tolist()",
        "m = nq.map(lambda x: x + 1, range(5))\nm",
        "nq.gather(m, timeout=60)",
        "%load_ext naq_nb",
        "%%naq submit\nimport math\ny = 1 + 1\nprint('hello from the cell')",
        "y, math.sqrt(16)",
        "c.stop()",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in cells])
    seen: list[tuple[int, str, str]] = []  # (cell index, message type, text/plain) in arrival order

    class Recording(nbclient.NotebookClient):
        def process_message(self, msg, cell, cell_index):
            data = msg["content"].get("data") or {}
            seen.append((cell_index, msg["msg_type"], data.get("text/plain", "")))
            return super().process_message(msg, cell, cell_index)

    Recording(nb, timeout=90, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    job_out = nb.cells[1].outputs[0]["data"]
    assert "succeeded" in job_out["text/plain"] and "result: 80" in job_out["text/plain"]
    assert "succeeded" in job_out["text/html"] and "<code>80</code>" in job_out["text/html"]
    assert nb.cells[2].outputs[0]["data"]["text/plain"] == "80"
    sweep_out = nb.cells[3].outputs[0]["data"]
    assert "3/3 succeeded" in sweep_out["text/plain"] and "3/3 succeeded" in sweep_out["text/html"]
    assert nb.cells[4].outputs[-1]["data"]["text/plain"] == "[1, 4, 9]"
    map_out = nb.cells[5].outputs[0]["data"]
    assert "5/5 succeeded" in map_out["text/plain"] and "naq map" in map_out["text/plain"]
    assert nb.cells[6].outputs[-1]["data"]["text/plain"] == "[1, 2, 3, 4, 5]"
    # every display reached its end: what is saved is static, no widget view to go missing on reopen
    for i in (1, 3, 5):
        assert all(WIDGET_MIME not in o.get("data", {}) for o in nb.cells[i].outputs), nb.cells[i].outputs
    # %%naq submit: ONE output (the job's display, its log line once), only the assigned names in the result
    cell_out = nb.cells[8].outputs
    assert len(cell_out) == 1, cell_out
    text = cell_out[0]["data"]["text/plain"]
    assert text.count("hello from the cell") == 1 and "result: y = 2; imported math" in text, text
    assert nb.cells[9].outputs[-1]["data"]["text/plain"] == "(2, 4.0)"
    # while cell 2 blocked on job.result(), updates of cell 1's display arrived with progress
    kinds = [(i, kind, "progress: " in t) for i, kind, t in seen]
    assert (2, "update_display_data", True) in kinds, seen
    assert kinds.index((2, "update_display_data", True)) < kinds.index((2, "execute_result", False))
