"""IPython magics: ``%load_ext naq_nb``, then ``%naq ...`` and ``%%naq submit``.

The line magic parses its call with :mod:`ast` (nothing runs or is sent when
it does not parse), evaluates the callee and the arguments in the user
namespace and submits through the session (``nq.submit``); the cell magic runs
the cell on a worker with the values it reads, and brings the names it
assigns back.
"""

from __future__ import annotations

import ast
import math
import re
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_cell_magic, magics_class

from .widgets import install_display_hooks, uninstall_display_hooks

__all__ = ["NaqMagics", "load_ipython_extension", "unload_ipython_extension", "parse_call", "cell_names"]

USAGE = """\
%naq submit fn(args...)     submit a call (evaluated in your namespace); returns its JobFuture
%naq status [JOB_ID]        one job's live status, or the table of recent jobs
%naq jobs                   recent jobs (a DataFrame)
%naq workers                live workers (a DataFrame)
%naq cancel JOB_ID          cancel a job
%naq result JOB_ID [SECS]   wait for a job's result and return it
%naq local start [N]        start a local server + a worker with N slots (default 4)
%naq local stop             stop it
%%naq submit                run the cell on a worker; the names it assigns come back"""


def parse_call(expr: str) -> ast.Call:
    """The ``ast.Call`` of ``expr``; :class:`UsageError` with a readable message otherwise."""
    if not expr.strip():
        raise UsageError("%naq submit needs a call, e.g. %naq submit fn(1, x=2)")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise UsageError(f"%naq submit: cannot parse {expr.strip()!r}: {exc.msg} (column {exc.offset})") from None
    if not isinstance(tree.body, ast.Call):
        raise UsageError(f"%naq submit needs a call like fn(1, x=2), not {expr.strip()!r}")
    return tree.body


def _words(arg: str, what: str) -> list[str]:
    """``arg`` split as a shell does; an unclosed quote is a usage error naming the subcommand."""
    try:
        return shlex.split(arg)
    except ValueError as exc:
        raise UsageError(f"%naq {what}: {exc} in {arg!r}\n\n" + USAGE) from None


_IPYTHON_HISTORY = re.compile(r"_{1,3}|_i{1,3}|_i?\d+")


def _eval(node: ast.expr, ns: dict) -> Any:
    return eval(compile(ast.Expression(node), "<%naq submit>", "eval"), ns)  # noqa: S307 - the user's own code


def _call_parts(call: ast.Call, ns: dict) -> tuple[Any, list, dict]:
    fn = _eval(call.func, ns)
    args: list = []
    for a in call.args:
        if isinstance(a, ast.Starred):
            args.extend(_eval(a.value, ns))
        else:
            args.append(_eval(a, ns))
    kwargs: dict = {}
    for kw in call.keywords:
        more = dict(_eval(kw.value, ns)) if kw.arg is None else {kw.arg: _eval(kw.value, ns)}
        twice = sorted(str(k) for k in more if k in kwargs)
        if twice:  # as Python's own call does: a later value must not silently replace an earlier one
            raise TypeError(f"%naq submit: keyword argument {twice[0]!r} is given more than once")
        kwargs.update(more)
    return fn, args, kwargs


def cell_names(source: str) -> tuple[list[str], list[str]]:
    """(names the cell reads, names it assigns at its top level), from its syntax tree."""
    tree = ast.parse(source)
    stored: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stored.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            stored.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
        for sub in (
            ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else ()
        ):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
                stored.add(sub.id)
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return sorted(loaded), sorted(stored)


@magics_class
class NaqMagics(Magics):
    """The ``%naq`` / ``%%naq`` magics."""

    @property
    def _shell(self) -> InteractiveShell:
        """The shell the magics are registered with (IPython sets it; None only on a bare instance)."""
        if self.shell is None:
            raise UsageError("%naq needs an IPython shell")
        return self.shell

    @line_cell_magic
    def naq(self, line: str, cell: str | None = None) -> Any:
        cmd, _, rest = line.strip().partition(" ")
        if cell is not None:
            if cmd != "submit" or rest.strip():
                raise UsageError("the cell magic is %%naq submit (no arguments)\n\n" + USAGE)
            return self._submit_cell(cell)
        handler = getattr(self, f"_cmd_{cmd}", None) if cmd else None
        if handler is None:
            raise UsageError((f"unknown %naq subcommand {cmd!r}\n\n" if cmd else "") + USAGE)
        return handler(rest.strip())

    # `%naq?` shows this: the usage text, kept in one place.
    naq.__doc__ = (
        "Submit and watch naq_nb jobs from a notebook.\n\n"
        + USAGE
        + "\n\nExample: ``j = %naq submit train(lr=0.1)``, then ``j.result()``."
    )

    # --- line subcommands ---------------------------------------------------------------------

    def _cmd_submit(self, expr: str) -> Any:
        from ..client.session import submit

        call = parse_call(expr)  # before anything is evaluated or sent
        fn, args, kwargs = _call_parts(call, self._shell.user_ns)
        return submit(fn, *args, **kwargs)

    @staticmethod
    def _one_id(arg: str, what: str) -> str:
        parts = _words(arg, what)
        if len(parts) != 1:
            raise UsageError(f"%naq {what} needs one job id\n\n" + USAGE)
        return parts[0]

    def _cmd_status(self, arg: str) -> Any:
        if not arg:
            from .frames import jobs

            return jobs()
        from ..client.session import job

        return job(self._one_id(arg, "status"))

    def _cmd_jobs(self, arg: str) -> Any:
        from .frames import jobs

        return jobs()

    def _cmd_workers(self, arg: str) -> Any:
        from .frames import workers

        return workers()

    def _cmd_cancel(self, arg: str) -> Any:
        from ..client.session import job

        fut = job(self._one_id(arg, "cancel"))
        ok = fut.cancel()
        print(f"job {fut.job_id} cancelled" if ok else f"job {fut.job_id} had already ended ({fut.status})")
        return None

    def _cmd_result(self, arg: str) -> Any:
        from ..client.session import job

        parts = _words(arg, "result")
        if len(parts) not in (1, 2):
            raise UsageError("%naq result needs a job id and optionally a timeout in seconds\n\n" + USAGE)
        try:
            timeout = float(parts[1]) if len(parts) == 2 else None
        except ValueError:
            timeout = -1.0
        if timeout is not None and not 0 <= timeout < math.inf:  # (NaN fails both)
            raise UsageError(f"%naq result: the timeout must be a number of seconds >= 0, not {parts[1]!r}")
        return job(parts[0]).result(timeout)

    def _cmd_local(self, arg: str) -> Any:
        from .local import current_cluster, local

        parts = arg.split()
        if parts[:1] == ["start"] and len(parts) <= 2:
            if len(parts) == 2 and not (parts[1].isascii() and parts[1].isdigit()):
                raise UsageError(f"%naq local start takes a number of workers, not {parts[1]!r}")
            return local(workers=int(parts[1]) if len(parts) == 2 else 4)
        if parts == ["stop"]:
            c = current_cluster()
            if c is not None:
                c.stop()
            return None
        raise UsageError("%naq local start [N] | %naq local stop\n\n" + USAGE)

    # --- the cell magic ---------------------------------------------------------------------------
    def _submit_cell(self, cell: str) -> None:
        import importlib
        from ..client.session import submit
        from .celljob import run_cell_job
        from .display import kernel_shell
        from .widgets import JobDisplay

        try:
            loaded, stored = cell_names(cell)
        except SyntaxError as exc:
            raise UsageError(f"%%naq submit: the cell does not parse: {exc.msg} (line {exc.lineno})") from None
        shell = self._shell
        ns = shell.user_ns
        hidden = shell.user_ns_hidden
        # The notebook's own variables, also those named like a builtin (input, id) or starting with
        # "_"; not IPython's: its hidden names and its output and input history (_, __, _5, _i5).
        inputs = {n: ns[n] for n in loaded if n in ns and n not in hidden and not _IPYTHON_HISTORY.fullmatch(n)}
        fut = submit(run_cell_job, cell, inputs, stored)
        live = kernel_shell() is not None
        if live:  # ONE output: the live job display, its logs and result included; nothing printed
            JobDisplay(fut, logs=200).show()
        values = fut.result()
        shell.push(dict(values))
        shell.push({n: importlib.import_module(m) for n, m in values.modules.items()})
        if not live:  # a terminal shell gets no display updates: the logs and the outcome as text
            for line in fut.logs:
                print(line)
            print(repr(values))


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext naq_nb``: register the magics and the live displays."""
    ip.register_magics(NaqMagics)
    install_display_hooks(ip)


def unload_ipython_extension(ip: Any) -> None:
    """``%unload_ext naq_nb``: remove the magics and the display hooks."""
    for kind in ("line", "cell"):
        ip.magics_manager.magics[kind].pop("naq", None)
    uninstall_display_hooks(ip)
