"""Shared CLI bits: connection options, argument types, running one coroutine with a broker."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import re
from typing import Any, Awaitable, Callable, NoReturn

import nats.errors

from ..client.outage import no_answer
from ..core.broker import Broker
from ..core.layout import JOB_ID_RE, QUEUE_NAME_RE
from ..core.settings import Settings, redact_url
from .errors import UsageError

__all__ = [
    "OneLineParser",
    "add_url",
    "with_broker",
    "print_table",
    "terminal_text",
    "settings_from",
    "UsageError",
    "port_number",
    "positive_int",
    "positive_seconds",
    "queue_name",
    "job_id",
    "utc_time",
]


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``naq worker: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_url(p: argparse.ArgumentParser) -> None:
    """The connection options every command that talks to NATS takes.

    User/password or a token go in the URL (``nats://user:pass@host:4222``);
    the same options can come from ``NAQ_NATS_CREDS`` / ``NAQ_TLS_*``.
    """
    p.add_argument(
        "--nats-url",
        "-u",
        default=None,
        help="NATS URL (default: $NAQ_NATS_URL or nats://127.0.0.1:4222); user/password or token "
        "go in it: nats://user:pass@host:4222",
    )
    p.add_argument("--creds", default=None, help="NATS credentials file (JWT + NKey seed)")
    p.add_argument("--tls-ca", default=None, help="CA certificate file that signed the server's certificate")
    p.add_argument("--tls-cert", default=None, help="client certificate file (mutual TLS, with --tls-key)")
    p.add_argument("--tls-key", default=None, help="client private key file (mutual TLS)")


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment and the connection options; bad values end as :class:`UsageError`."""
    try:
        return Settings.from_env(
            nats_url=getattr(args, "nats_url", None),
            creds=getattr(args, "creds", None),
            tls_ca=getattr(args, "tls_ca", None),
            tls_cert=getattr(args, "tls_cert", None),
            tls_key=getattr(args, "tls_key", None),
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None


def with_broker(args: argparse.Namespace, fn: Callable[[Broker], Awaitable[Any]]) -> Any:
    """``fn(broker)`` on a connection made for it. A server that stops answering midway (frozen,
    overloaded, gone) ends in one line naming it, as one that never answered does: nats-py's bare
    ``nats: timeout`` came out as a traceback."""
    settings = settings_from(args)

    async def _run() -> Any:
        b = await Broker.connect(settings=settings)
        try:
            return await fn(b)
        except nats.errors.TimeoutError:
            raise no_answer(redact_url(settings.nats_url), f"running `naq {args.command}`") from None
        finally:
            await b.close()

    return asyncio.run(_run())


# --- argument types: argparse turns their ArgumentTypeError into one line and exit code 2 ---------


def port_number(text: str) -> int:
    """A TCP port 0-65535 (0: a free one)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, not {n}")
    return n


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {n}")
    return n


def positive_seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, not {text!r}")
    return v


def queue_name(text: str) -> str:
    if not QUEUE_NAME_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"invalid queue name {text!r}: use 1-64 letters, digits, '_' or '-'")
    return text


def job_id(text: str) -> str:
    if not JOB_ID_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"invalid job id {text!r}: 1-128 letters, digits, '_' or '-'")
    return text


# C0 controls (escape sequences, carriage returns, bells), DEL and C1 controls; tabs and line breaks
# are kept only in text printed as lines (a traceback).
_CONTROLS_IN_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def terminal_text(value: Any, lines: bool = False) -> str:
    """``str(value)`` safe to print on a terminal: each control character is shown as its Python
    escape (``\\x1b``, ``\\r``, and ``\\n`` unless ``lines``). Job errors, names and tracebacks are
    stored text, written by job code or by anyone who can write to the buckets: printed as they are,
    an escape sequence could rewrite the screen or the terminal's title, and a line break the table."""
    return (_CONTROLS_IN_LINES if lines else _CONTROLS).sub(lambda m: repr(m.group())[1:-1], str(value))


def print_table(rows: list[dict], columns: list[str]) -> None:
    """``rows`` as a table of ``columns``, each cell one line of :func:`terminal_text`."""
    if not rows:
        print("(none)")
        return
    cells = [[terminal_text(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def utc_time(t: Any, suffix: str = "") -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS`` (UTC) plus ``suffix``; "" for none."""
    if not t:
        return ""
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        return f"invalid ({t!r:.40})"  # a record stored before times were checked, or a forged one
    try:
        return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + suffix
    except (OverflowError, OSError, ValueError):  # finite, but no date (1e300, -1e20)
        return f"invalid ({t!r:.40})"
