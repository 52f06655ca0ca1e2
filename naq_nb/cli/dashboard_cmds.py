"""``naq dashboard``: the notebook dashboard served as a web page through Voilà.

Voilà (the optional ``dashboard`` extra) runs a tiny generated notebook,
``nq.connect(URL); nq.dashboard()``, in a live kernel and serves its outputs
without code cells; widget buttons (Pause/Resume, Requeue) work because the
kernel stays alive behind the page. This command checks Voilà and the NATS
server first (one clear line on failure), runs Voilà as a child process, prints
the page's URL, and stops it on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path
from typing import Callable

from ..core.errors import NaqException
from ..core.keeper import log_tail
from ..core.server import free_port
from ..core.settings import Settings, redact_url
from .common import add_url, settings_from, with_broker
from .errors import VoilaMissing

__all__ = ["register", "require_voila", "VoilaMissing", "write_dashboard_notebook", "voila_command", "voila_env"]

INSTALL_HINT = "pip install 'naq_nb[dashboard]'"
_START_TIMEOUT = 90.0


def register(sub: argparse._SubParsersAction) -> None:
    # As in naq, -h is the host and -p the port (so only --help asks for help here).
    p = sub.add_parser(
        "dashboard", add_help=False, help="serve the live dashboard (queues, workers, schedules, failed) via Voilà"
    )
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument(
        "--port",
        "-p",
        type=_port_or_env(env_port := os.environ.get("NAQ_DASHBOARD_PORT") or None),
        default=env_port,
        help="port of the page (default: $NAQ_DASHBOARD_PORT, else a free one)",
    )
    add_url(p)
    p.add_argument(
        "--host",
        "-h",
        default=os.environ.get("NAQ_DASHBOARD_HOST") or "127.0.0.1",
        help="address to listen on (default: $NAQ_DASHBOARD_HOST, else 127.0.0.1)",
    )
    p.add_argument("--no-browser", action="store_true", help="do not open a browser, only print the URL")
    p.set_defaults(func=_dashboard)


def _port_or_env(env_text: str | None) -> Callable[[str], int]:
    """``_port`` that names ``NAQ_DASHBOARD_PORT`` when the bad value is that default (argparse
    converts a string default with the option's type, and would blame ``--port`` alone)."""

    def parse(text: str) -> int:
        try:
            return _port(text)
        except argparse.ArgumentTypeError as exc:
            if env_text is not None and text is env_text:
                raise argparse.ArgumentTypeError(f"{exc} (from NAQ_DASHBOARD_PORT)") from None
            raise

    return parse


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < n < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, not {n}")
    return n


def require_voila() -> None:
    """Raise :class:`VoilaMissing` (naming the extra to install) unless Voilà can be imported."""
    try:
        import voila  # noqa: F401
    except ImportError as exc:
        raise VoilaMissing(f"naq dashboard needs Voilà, which cannot be imported ({exc}): {INSTALL_HINT}") from None


def write_dashboard_notebook(folder: str | os.PathLike, nats_url: str | None = None) -> Path:
    """Write the notebook Voilà runs: ``nq.connect()`` and ``nq.dashboard()``, readable by this user only.

    The connection (URL with any credentials, creds and TLS files) reaches the kernel
    through its environment (``NAQ_NATS_URL``, ``NAQ_NATS_CREDS``, ``NAQ_TLS_*``), never
    through the file; ``nats_url`` is accepted for compatibility and not written.
    """
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    source = "import naq_nb as nq\nnq.connect()  # NAQ_NATS_URL etc. come from the environment\nnq.dashboard()"
    nb = new_notebook(
        cells=[new_code_cell(source)],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
    )
    path = Path(folder) / "naq-dashboard.ipynb"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        nbformat.write(nb, f)
    return path


def voila_env(settings: Settings) -> dict[str, str]:
    """The environment of the Voilà process: the connection settings its kernel reads."""
    env = {**os.environ, "NAQ_NATS_URL": settings.nats_url}
    for var, value in (
        ("NAQ_NATS_CREDS", settings.creds),
        ("NAQ_TLS_CA", settings.tls_ca),
        ("NAQ_TLS_CERT", settings.tls_cert),
        ("NAQ_TLS_KEY", settings.tls_key),
    ):
        if value:
            env[var] = os.path.abspath(value)
    return env


def voila_command(notebook: Path, host: str, port: int) -> list[str]:
    """The Voilà command line (this interpreter, so its kernel can import naq_nb)."""
    return [
        sys.executable,
        "-m",
        "voila",
        str(notebook),
        "--port",
        str(port),
        "--no-browser",
        f"--Voila.ip={host}",
        "--Voila.port_retries=0",
        "--VoilaConfiguration.show_tracebacks=True",
    ]


def _page_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{shown}:{port}/"


def _wait_until_serving(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise NaqException(f"Voilà exited at start (code {proc.returncode}):\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(url + "api/kernels", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers; the kernels API may be closed without auth, the page is not
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise NaqException(f"Voilà did not answer on {url} within {_START_TIMEOUT:g}s:\n{_tail(log_path)}")
        time.sleep(0.2)


def _tail(path: Path, n: int = 15) -> str:
    return "\n".join(log_tail(path, n))


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # Voilà and its kernels share its process group
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def _dashboard(args: argparse.Namespace) -> int:
    require_voila()
    settings = settings_from(args)
    url = redact_url(settings.nats_url)
    with_broker(args, lambda b: asyncio.sleep(0))  # an unreachable server: one line now, not a broken page
    port = args.port or free_port(args.host if args.host not in ("0.0.0.0", "") else "127.0.0.1")
    folder = Path(tempfile.mkdtemp(prefix="naq-dashboard-"))
    log_path = folder / "voila.log"
    proc = None

    def _on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        notebook = write_dashboard_notebook(folder)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "wb") as logf:
            proc = subprocess.Popen(
                voila_command(notebook, args.host, port),
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=voila_env(settings),
            )
        page = _page_url(args.host, port)
        _wait_until_serving(proc, page, log_path)
        print(f"naq dashboard: {page}  (NATS {url}; Voilà log {log_path}; Ctrl-C to stop)", flush=True)
        if not args.no_browser:
            webbrowser.open(page)
        code = proc.wait()
        if code:
            print(f"naq: error: Voilà exited with code {code}:\n{_tail(log_path)}", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc is not None:
            _stop(proc)
        shutil.rmtree(folder, ignore_errors=True)
