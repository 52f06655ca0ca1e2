#!/usr/bin/env python3
"""Real-browser checks (Playwright driving Debian's /usr/bin/chromium; never `playwright install`).

1. ``naq dashboard`` (Voilà) against a local setup: the page shows the worker, Requeue and Pause
   work (checked through NATS); screenshot ``<out>/dashboard.png``.
2. Notebooks in JupyterLab: Run All, kernel idle, no error output, widgets rendered live, an
   expected text shown; one screenshot each (``<out>/<name>.png``). Notebooks are given as
   ``NAME.ipynb:TEXT`` relative to ``--notebooks-dir`` (run from a throwaway copy, so
   JupyterLab's autosave never touches the repo). Without ``--notebooks``, a generated scratch
   notebook (a job widget and the dashboard from ``nq.local()``) is checked.

Usage:
  python browser/run_browser_tests.py --out artifacts/browser \
      [--notebooks 01-quickstart.ipynb:succeeded 02-parameter-sweep.ipynb:succeeded] [--skip-dashboard]

Exit 0 when every check passes, 1 when one fails, 2 on a setup error. A JSON summary is printed
and written to ``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import JupyterLab, chromium_page, copy_tree, log, run_notebook, scratch_notebook  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _spec(text: str) -> tuple[str, str]:
    name, sep, expect = text.partition(":")
    if not name.endswith(".ipynb"):
        raise argparse.ArgumentTypeError(f"expected NAME.ipynb[:TEXT], not {text!r}")
    return name, expect


def _notebooks(args: argparse.Namespace, summary: dict) -> int:
    work = Path(tempfile.mkdtemp(prefix="naq-browser-"))
    if args.notebooks:
        src = Path(args.notebooks_dir).resolve()
        missing = [n for n, _ in args.notebooks if not (src / n).exists()]
        if missing:
            raise FileNotFoundError(f"not in {src}: {', '.join(missing)}")
        root, specs = copy_tree(src), list(args.notebooks)
    else:
        root = work / "scratch"
        specs = [scratch_notebook(root)]
    lab = JupyterLab(root, work)
    failed = 0
    try:
        lab.start()
        with chromium_page() as page:
            for name, expect in specs:
                res = run_notebook(page, lab, name, expect, args.out / (Path(name).stem + ".png"),
                                   run_timeout=args.run_timeout, require_widgets=args.require_widgets)
                summary["notebooks"].append(res.__dict__)
                log(f"{name}: {'ok' if res.ok else 'FAILED ' + '; '.join(res.failures)} ({res.seconds}s)")
                failed += not res.ok
    finally:
        lab.stop()
        shutil.rmtree(work, ignore_errors=True)
        if args.notebooks:
            shutil.rmtree(root.parent, ignore_errors=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "browser", help="screenshots and summary")
    ap.add_argument("--notebooks", nargs="*", type=_spec, default=[], metavar="NAME.ipynb:TEXT")
    ap.add_argument("--notebooks-dir", default=str(ROOT / "notebooks"))
    ap.add_argument("--skip-dashboard", action="store_true", help="only the notebook checks")
    ap.add_argument("--skip-notebooks", action="store_true", help="only the dashboard check")
    ap.add_argument("--no-require-widgets", dest="require_widgets", action="store_false",
                    help="notebooks need not show an ipywidgets view")
    ap.add_argument("--run-timeout", type=float, default=300.0, help="seconds for one notebook's Run All")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"dashboard": None, "notebooks": []}
    failed = 0
    try:
        if not args.skip_dashboard:
            from dashboard_check import check_dashboard
            problems = check_dashboard(args.out)
            summary["dashboard"] = {"ok": not problems, "failures": problems,
                                    "screenshot": str(args.out / "dashboard.png")}
            log(f"dashboard: {'ok' if not problems else 'FAILED ' + '; '.join(problems)}")
            failed += bool(problems)
        if not args.skip_notebooks:
            failed += _notebooks(args, summary)
    except Exception as exc:  # the harness could not run: a server, the browser or a file is missing
        summary["setup_error"] = f"{type(exc).__name__}: {exc}"
        print(f"SETUP ERROR: {summary['setup_error']}", file=sys.stderr)
        failed = -1
    text = json.dumps(summary, indent=2, default=str)
    (args.out / "summary.json").write_text(text)
    print(text)
    checks = (summary["dashboard"] is not None) + len(summary["notebooks"])
    if failed >= 0:
        print(f"browser: {checks - failed} passed, {failed} failed")
    return 2 if failed < 0 else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
