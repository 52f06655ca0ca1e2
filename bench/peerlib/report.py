"""The peer bench's report: a markdown table (with date and machine) and a PNG chart."""

from __future__ import annotations

import os
import shlex
import platform
import time
from pathlib import Path

__all__ = ["machine", "write_markdown", "write_chart"]

LABELS = {"naq_nb": "**naq_nb**", "naq_nb_sync": "**naq_nb** (sync calls)",
          "naq_nb_async": "**naq_nb** (async job)", "taskiq": "taskiq (Redis Streams)",
          "taskiq_nats": "taskiq (NATS JetStream)",
          "huey": "huey (Redis)", "dramatiq": "dramatiq (Redis)", "saq": "saq (Redis)", "arq": "arq (Redis)",
          "rq": "rq (Redis)", "celery": "celery (Redis)"}


def machine() -> str:
    cpu = "?"
    mem = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
                break
    except OSError:  # not Linux: the platform line below still says what it is
        pass
    osname = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {mem} memory, {osname}, Python {platform.python_version()}"


def _f(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def _ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _peers(summary: dict) -> list[tuple[str, dict]]:
    rows = [(lib, s) for lib, s in summary.items() if lib != "raw_nats"]
    return sorted(rows, key=lambda kv: -(kv[1].get("e2e_per_s") or 0))


def _against_fastest(summary: dict) -> list[str]:
    """Each naq_nb row against the best peer of each phase (the goals of issue 10 are put that way)."""
    peers = [(lib, s) for lib, s in summary.items() if s.get("runs_ok") and not lib.startswith(("naq_nb", "raw"))]
    lines = []
    for name in ("naq_nb", "naq_nb_async", "naq_nb_sync"):
        naq = summary.get(name)
        if not naq or not naq.get("runs_ok") or not peers:
            continue
        out = []
        for key, what, higher in (("e2e_per_s", "e2e", True), ("drain_per_s", "drain", True),
                                  ("readback_s", "read back", False), ("p50_ms", "p50 latency", False)):
            have = [(lib, s[key]) for lib, s in peers if s.get(key)]
            if not have or not naq.get(key):
                continue
            lib, best = (max if higher else min)(have, key=lambda kv: kv[1])
            ratio = naq[key] / best if higher else best / naq[key]
            out.append(f"{what}: {ratio:.2f}x the best peer ({lib})")
        lines += ["", f"{LABELS[name]} against the best peer of each column (above 1 = naq_nb ahead): "
                  + "; ".join(out) + "."]
    return lines


METHOD = [
    "How it is measured (`bench/peerlib/driver.py`):", "",
    "* Every call is the one a user makes for one job: enqueue, then the library's own blocking result "
    "call. The task returns 1 and every value read back is checked.",
    "* e2e: the clock runs from the first enqueue until the last job's result is stored (polled every "
    "1 ms with a non-blocking check, so a result wait that sleeps is not charged here).",
    "* read back: then every result in submission order, one blocking call each; total seconds.",
    "* latency: one job at a time with a warm worker, enqueue → result through the library's wait call.",
    "* drain: the worker is stopped, N jobs are enqueued, the worker is started; from the first job "
    "done to the last one enqueued done (the worker's start-up is not counted); jobs still not done then "
    "are reported as late.",
    "* Redis (Debian's redis-server, no persistence) is flushed before each library; each NATS-based "
    "measurement gets a fresh nats-server. Where a library polls, its documented poll interval is "
    "set to 1 ms (noted in the last column).",
]


def _header(summary: dict, meta: dict) -> list[str]:
    a = meta["args"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(meta["started"]))
    nats = next((s["server"] for s in summary.values() if s.get("server")), "nats-server ?")
    lines = [
        "# naq_nb beside its peers", "",
        f"Measured {when} on {machine()}; redis-server {meta['redis']}, {nats}. "
        f"Load average {meta['load_start'][0]:.1f} at the start, {meta['load_end'][0]:.1f} at the end; "
        f"the whole bench took {meta['duration_s'] / 60:.1f} min.", "",
        f"`{shlex.join(['python', 'bench/peers.py', *meta['argv']])}`: {a['jobs']:,} no-op jobs per phase, "
        f"total worker concurrency 10 in each library's own worker CLI, medians of {a['runs']} interleaved run(s), "
        f"{a['latency_rounds']} latency samples per run.",
    ]
    return lines + (["", f"**Note: {a['note']}**"] if a.get("note") else [])


def _peer_table(summary: dict) -> list[str]:
    lines = ["", "| library | e2e jobs/s (first enqueue → last done) | drain jobs/s (pre-filled queue) "
                 "| all results read back one by one | submit → result p50 | p99 | worker, result wait |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for lib, s in _peers(summary):
        name = LABELS.get(lib, lib) + (f" {s['version']}" if s.get("version") else "")
        if not s["runs_ok"]:
            lines.append(f"| {name} | failed: {'; '.join(s['errors'])[:200]} | | | | | |")
            continue
        lines.append(f"| {name} | {_f(s.get('e2e_per_s'))} | {_f(s.get('drain_per_s'))} | "
                     f"{_f(s.get('readback_s'), 2)} s | {_ms(s.get('p50_ms'))} ms | {_ms(s.get('p99_ms'))} ms | "
                     f"{s.get('notes', '')} |")
    late = [f"{lib} ({s['drain_late']:.0f} late, "
            + (f"{s['drain_lost']:.0f} still not done 60 s later)" if s.get("drain_lost")
               else f"all done after {s['drain_all_s']:.1f} s)")
            for lib, s in _peers(summary) if s.get("drain_late")]
    if late:
        lines += ["", "Drain: jobs not yet done when the last one enqueued was (median per run; the rate above "
                      "leaves them out): " + "; ".join(late) + "."]
    missed = [f"{lib} ({s['latency_missed']:.0f})" for lib, s in _peers(summary) if s.get("latency_missed")]
    if missed:
        lines += ["", "Latency: result waits that returned nothing within 10 s although the job ran (median per "
                      "run, left out of p50/p99): " + "; ".join(missed) + "."]
    return lines + _against_fastest(summary)


def _raw_table(summary: dict, jobs: int) -> list[str]:
    raw = summary.get("raw_nats")
    if not raw or not raw["runs_ok"]:
        return []
    lines = ["", f"Raw nats-py {raw.get('version', '')} on a fresh nats-server in the same run "
                 f"({jobs:,} messages of 256 bytes):", "",
             "| acknowledged publish, one at a time | publish_async | pull + ack | "
             "pull + one KV put per message (256 in flight) | publish → pull → KV put → watch p50 / p99 |",
             "|---:|---:|---:|---:|---:|",
             f"| {_f(raw.get('pub_sync_per_s'))}/s | {_f(raw.get('pub_async_per_s'))}/s | "
             f"{_f(raw.get('pull_ack_per_s'))}/s | {_f(raw.get('pull_kv_per_s'))}/s | "
             f"{_ms(raw.get('rt_p50_ms'))} / {_ms(raw.get('rt_p99_ms'))} ms |"]
    for name in ("naq_nb", "naq_nb_async", "naq_nb_sync"):
        naq = summary.get(name)
        if naq and naq.get("drain_per_s") and raw.get("pull_kv_per_s"):
            lines += ["", f"{LABELS[name]}'s drain is {naq['drain_per_s'] / raw['pull_kv_per_s']:.0%} of the pull + "
                          "KV put ceiling."]
    return lines


def _every_run(runs: dict) -> list[str]:
    lines = ["", "Every run (e2e / drain jobs/s):", ""]
    for lib, rs in runs.items():
        if lib == "raw_nats":
            cells = [f"{_f(r.get('pull_kv_per_s'))}" if "error" not in r else "failed" for r in rs]
            lines.append(f"* raw_nats pull + KV put: {', '.join(cells)}")
            continue
        cells = [f"{_f(r.get('e2e_per_s'))} / {_f(r.get('drain_per_s'))}" if "error" not in r
                 else f"failed ({r['error'][:80]})" for r in rs]
        lines.append(f"* {lib}: {', '.join(cells)}")
    return lines


def write_markdown(path: Path, summary: dict, runs: dict, meta: dict) -> None:
    lines = (_header(summary, meta) + _peer_table(summary) + _raw_table(summary, meta["args"]["jobs"])
             + [""] + METHOD + _every_run(runs))
    path.write_text("\n".join(lines) + "\n")


def _label(ax, xs: list[float], ys: list[float], fmt: str) -> None:
    for x, y in zip(xs, ys):
        if x:
            ax.text(x, y, " " + fmt.format(x), va="center", fontsize=7)


def write_chart(path: Path, summary: dict, meta: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    rows = [(lib, s) for lib, s in _peers(summary) if s["runs_ok"]][::-1]  # fastest at the top
    if not rows:
        return
    names = [LABELS.get(lib, lib).strip("*") for lib, _ in rows]
    y = list(range(len(rows)))
    colors = ["#d62728" if lib.startswith("naq_nb") else "#1f77b4" for lib, _ in rows]
    fig, axes = plt.subplots(1, 3, figsize=(16, 0.55 * len(rows) + 2.2), sharey=True)

    ax = axes[0]
    e2e = [s.get("e2e_per_s", 0) for _, s in rows]
    drain = [s.get("drain_per_s", 0) for _, s in rows]
    ax.barh([v + 0.2 for v in y], e2e, 0.4, color=colors)
    ax.barh([v - 0.2 for v in y], drain, 0.4, color=colors, alpha=0.45)
    _label(ax, e2e, [v + 0.2 for v in y], "{:,.0f}")
    _label(ax, drain, [v - 0.2 for v in y], "{:,.0f}")
    handles = [Patch(color="0.35", label="e2e (enqueue one by one)"), Patch(color="0.35", alpha=0.45, label="drain")]
    raw = summary.get("raw_nats")
    if raw and raw.get("pull_kv_per_s"):
        ax.axvline(raw["pull_kv_per_s"], color="gray", ls="--", lw=1)
        handles.append(plt.Line2D([], [], color="gray", ls="--", label=f"raw nats-py pull + KV put "
                                  f"({raw['pull_kv_per_s']:,.0f}/s)"))
    ax.set_title("jobs/s (higher is better)")
    ax.legend(handles=handles, loc="lower right", fontsize=7)

    ax = axes[1]
    rb = [s.get("readback_s", 0) for _, s in rows]
    ax.barh(y, rb, color=colors)
    _label(ax, rb, y, "{:.2f} s")
    ax.set_title(f"read back all {meta['args']['jobs']:,} results, s (lower is better)")

    ax = axes[2]
    p50 = [s.get("p50_ms", 0) for _, s in rows]
    ax.barh(y, p50, color=colors, label="p50")
    ax.plot([s.get("p99_ms", 0) for _, s in rows], y, "k|", markersize=14, label="p99")
    _label(ax, p50, y, "{:.1f}")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title("submit → result, ms, log scale (lower is better)")
    ax.legend(loc="lower right", fontsize=7)

    axes[0].set_yticks(y, names)
    for ax in axes:
        ax.margins(x=0.15)
    when = time.strftime("%Y-%m-%d", time.gmtime(meta["started"]))
    a = meta["args"]
    fig.suptitle(f"naq_nb and peers, {when}: {a['jobs']:,} no-op jobs, total worker concurrency 10, "
                 f"median of {a['runs']} run(s)" + (f"\n{a['note'][:160]}" if a.get("note") else ""), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
