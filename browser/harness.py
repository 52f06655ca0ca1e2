"""Shared pieces of the real-browser checks: Debian's Chromium through Playwright, a JupyterLab
server of our own, and a generic "Run All and check" for any notebook.

Never ``playwright install``: the browser is Debian's ``/usr/bin/chromium``
(``apt-get install -y chromium``); Playwright's Python package only drives it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["CHROMIUM", "free_port", "wait_until", "chromium_page", "JupyterLab", "NotebookResult",
           "run_notebook", "scratch_notebook", "copy_tree", "log"]

CHROMIUM = os.environ.get("NAQ_CHROMIUM", "/usr/bin/chromium")
# As root Chromium needs --no-sandbox; the rest stops its own background traffic (closed network here).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.2f}s] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> object:
    """Poll ``pred`` until truthy; raise ``TimeoutError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s")
        time.sleep(interval)


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator["object"]:
    """A Playwright page in headless Debian Chromium; console errors collected in ``page.naq_console``."""
    from playwright.sync_api import sync_playwright
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} not found: apt-get install -y chromium (never `playwright install`)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text[:300]) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"[:300]))
            page.naq_console = errors
            yield page
        finally:
            browser.close()


class JupyterLab:
    """A token-less JupyterLab on a free loopback port, with isolated settings (no news toast,
    no windowed notebook rendering, no restored layout); stopped with its kernels."""

    def __init__(self, root_dir: str | os.PathLike, workdir: str | os.PathLike) -> None:
        self.root_dir, self.workdir = Path(root_dir), Path(workdir)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "jupyterlab.log"

    def _settings_dir(self) -> Path:
        settings = self.workdir / "lab-settings"
        for ext, name, value in (("apputils-extension", "notification",
                                  {"fetchNews": "false", "checkForUpdates": False}),
                                 # every cell in the DOM, so text checks see off-screen outputs too
                                 ("notebook-extension", "tracker", {"windowingMode": "none"})):
            d = settings / "@jupyterlab" / ext
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{name}.jupyterlab-settings").write_text(json.dumps(value))
        return settings

    def start(self, timeout: float = 90.0) -> "JupyterLab":
        env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(self._settings_dir()),
               "JUPYTERLAB_WORKSPACES_DIR": str(self.workdir / "workspaces"),
               "JUPYTER_RUNTIME_DIR": str(self.workdir / "runtime"),
               # nq.local()'s stores stay in the throwaway folder, not in ~/.local/share
               "NAQ_LOCAL_DIR": str(self.workdir / "naq-local")}
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1", "--port", str(self.port),
               "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
               # token-less on loopback: REST calls (DELETE a session) carry no XSRF cookie
               "--ServerApp.disable_check_xsrf=True",
               f"--ServerApp.root_dir={self.root_dir}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until(self._up, timeout, f"JupyterLab on {self.base} (log {self.log_path})", 0.5)
        log(f"JupyterLab up at {self.base} (root {self.root_dir})")
        return self

    def _up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited (code {self.proc.returncode}): "
                               f"{self.log_path.read_text(errors='replace')[-2000:]}")
        try:
            self.api("GET", "/api/status", timeout=2)
            return True
        except (urllib.error.URLError, OSError):
            return False

    def api(self, method: str, path: str, timeout: float = 10) -> object:
        req = urllib.request.Request(self.base + path, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
            return json.loads(body) if body else None

    def delete_sessions(self, nb_path: str) -> None:
        """Shut the notebook's kernels down: the server keeps them after the page goes."""
        for s in self.api("GET", "/api/sessions") or []:
            if s.get("path") == nb_path:
                self.api("DELETE", f"/api/sessions/{s['id']}", timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


# ipywidgets 8 in JupyterLab 4: widget views carry .jupyter-widgets; tracebacks and stderr render
# as application/vnd.jupyter.stderr outputs; the status bar reads "<kernel> | Idle".
PROBE_JS = r"""
() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(e => e.textContent.trim());
  const stderr = [...panel.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map(e => e.textContent.slice(0, 400));
  const status = [...document.querySelectorAll('.jp-StatusBar-TextItem')]
      .map(e => e.textContent.trim()).find(t => / \| [A-Z][a-z]+$/.test(t)) ?? null;
  const text = panel.textContent;
  return {prompts, stderr, status, text_len: text.length,
          widgets: panel.querySelectorAll('.jp-OutputArea-output .jupyter-widgets').length,
          disconnected: panel.querySelectorAll('.jupyter-widgets-disconnected').length,
          loading: text.includes('Loading widget'), widget_error: text.includes('Error displaying widget')};
}
"""
_ERROR_RE = re.compile(r"Traceback|\b\w*(Error|Exception)\b")


@dataclass
class NotebookResult:
    notebook: str
    expect: str
    ok: bool = False
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    screenshot: str = ""
    reopened_screenshot: str = ""


def run_notebook(page: "object", lab: JupyterLab, nb_path: str, expect: str, screenshot: Path,
                 kernel_timeout: float = 90.0, run_timeout: float = 300.0,
                 require_widgets: bool = True, reopen: bool = True) -> NotebookResult:
    """Open ``nb_path`` (relative to the lab's root) in JupyterLab, Run All, and check: every code cell
    ran, no error output, widget views rendered live (no "Loading widget..."), ``expect`` is shown."""
    from playwright.sync_api import TimeoutError as PWTimeout
    res = NotebookResult(nb_path, expect)
    t0 = time.monotonic()
    lab.delete_sessions(nb_path)
    page.goto(f"{lab.base}/lab/tree/{urllib.parse.quote(nb_path)}?reset", wait_until="domcontentloaded",
              timeout=90_000)
    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(timeout=90_000)
    # The status bar, not the execution indicator: that one says idle before a kernel exists.
    page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\| Idle$")).first.wait_for(
        timeout=kernel_timeout * 1000)
    log(f"{nb_path}: kernel idle; Run All")
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    state = None
    max_widgets = 0
    deadline = time.monotonic() + run_timeout
    while True:
        state = page.evaluate(PROBE_JS) or {}
        max_widgets = max(max_widgets, state.get("widgets") or 0)
        prompts = state.get("prompts") or []
        all_ran = bool(prompts) and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts)
        idle = (state.get("status") or "").endswith("| Idle")
        errors = [e for e in state.get("stderr", []) if _ERROR_RE.search(e)]
        if all_ran and idle:
            break
        if errors and idle and "[*]:" not in prompts:  # Run All stops at the first exception
            break
        if time.monotonic() > deadline:
            res.failures.append(f"Run All did not finish within {run_timeout:g}s (prompts {prompts})")
            break
        time.sleep(0.25)
    with contextlib.suppress(PWTimeout):  # the expected text may arrive by a widget update just after
        page.locator(".jp-NotebookPanel", has_text=expect).first.wait_for(timeout=15_000)
    state = page.evaluate(PROBE_JS) or {}
    # Finished displays turn into static HTML: count the live widget views seen during the run.
    state["widgets"] = max(max_widgets, state.get("widgets") or 0)
    text = page.evaluate("() => document.querySelector('.jp-NotebookPanel')?.textContent ?? ''")
    _judge(res, state, text, expect, require_widgets)
    _screenshot_whole_notebook(page, screenshot)
    res.screenshot, res.seconds = str(screenshot), round(time.monotonic() - t0, 1)
    if reopen:
        _save_and_reopen(page, lab, nb_path, expect, screenshot.with_name(screenshot.stem + "-reopened.png"), res)
    res.ok = not res.failures
    lab.delete_sessions(nb_path)  # the kernel (and any nq.local() in it) stops now
    return res


def _save_and_reopen(page: "object", lab: JupyterLab, nb_path: str, expect: str, screenshot: Path,
                     res: NotebookResult) -> None:
    """Save through JupyterLab (Ctrl+S), shut the kernel down, open the saved file again WITHOUT running
    it, and check that every output reads well: no widget error, the expected final text shown."""
    page.locator(".jp-NotebookPanel .jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    try:
        wait_until(lambda: page.locator(".lm-TabBar-tab.jp-mod-dirty").count() == 0, 30, "the notebook saved")
    except TimeoutError as exc:
        res.failures.append(str(exc))
        return
    saved = json.loads((lab.root_dir / nb_path).read_text())
    live_views = [i for i, c in enumerate(saved["cells"]) if c["cell_type"] == "code"
                  for o in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    if live_views:
        res.warnings.append(f"saved file still holds widget views in cells {sorted(set(live_views))}")
    lab.delete_sessions(nb_path)
    page.goto("about:blank")
    page.goto(f"{lab.base}/lab/tree/{urllib.parse.quote(nb_path)}?reset", wait_until="domcontentloaded",
              timeout=90_000)
    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(timeout=90_000)
    page.wait_for_timeout(3000)  # outputs and widget managers render
    state = page.evaluate(PROBE_JS) or {}
    text = page.evaluate("() => document.querySelector('.jp-NotebookPanel')?.textContent ?? ''")
    if state.get("widget_error") or "model not found" in text:
        res.failures.append("reopened notebook shows 'Error displaying widget' / 'model not found'")
    if expect and expect not in text:
        res.failures.append(f"reopened notebook does not show {expect!r}")
    _screenshot_whole_notebook(page, screenshot)
    res.reopened_screenshot = str(screenshot)


def _screenshot_whole_notebook(page: "object", path: Path) -> None:
    # The notebook scrolls inside its panel, so a full-page shot would cut it: grow the viewport.
    size = page.viewport_size
    height = page.evaluate("() => Math.max(...[...document.querySelectorAll('.jp-NotebookPanel *')]"
                           ".map(e => e.scrollHeight), 0)")
    page.set_viewport_size({"width": size["width"], "height": int(min(max(size["height"], height + 250), 8000))})
    page.wait_for_timeout(300)  # one layout pass
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def _judge(res: NotebookResult, state: dict, text: str, expect: str, require_widgets: bool) -> None:
    prompts = state.get("prompts") or []
    unrun = [p for p in prompts if not re.fullmatch(r"\[\d+\]:", p)]
    if not prompts:
        res.failures.append("no code cell found")
    elif unrun:
        res.failures.append(f"{len(unrun)} code cell(s) did not run: {unrun[:5]}")
    for e in state.get("stderr", []):
        (res.failures if _ERROR_RE.search(e) else res.warnings).append(f"stderr output: {e[:300]}")
    if require_widgets and not state.get("widgets"):
        res.failures.append("no ipywidgets view rendered (jupyterlab_widgets missing?)")
    if state.get("loading"):
        res.failures.append("'Loading widget...' still shown")
    if state.get("widget_error"):
        res.failures.append("'Error displaying widget' shown")
    if state.get("disconnected"):
        res.failures.append("a widget is a static restore (jupyter-widgets-disconnected), not live")
    if expect and expect not in text:
        res.failures.append(f"expected text {expect!r} not shown")


def scratch_notebook(folder: Path) -> tuple[str, str]:
    """A notebook with a job widget from ``nq.local()`` and the dashboard; returns (name, expected text)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    cells = [
        "import naq_nb as nq\ncluster = nq.local(workers=2)",
        "job = nq.submit(lambda x: x * 2, 21)\njob",
        "assert job.result(timeout=60) == 42",
        "dash = nq.dashboard(refresh=1.0)\ndash",
        "print('final state:', job.status)",
    ]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells], metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}})
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(folder / "scratch-job.ipynb"))
    return "scratch-job.ipynb", "final state: succeeded"


def copy_tree(src: Path) -> Path:
    """A throwaway copy of ``src``: JupyterLab autosaves, and the repo's notebooks must not change."""
    dst = Path(tempfile.mkdtemp(prefix="naq-nb-copy-")) / src.name
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return dst
