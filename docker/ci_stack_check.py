"""CI's check of the running compose stack, from the host, the way a notebook uses it.

    python docker/ci_stack_check.py NATS_URL WORKER_CONTAINER_TO_KILL

Connects with ``nq.connect``, submits 200 jobs (functions defined here, so they
travel by value like a notebook's) and an interval schedule, kills one worker
container with ``docker kill`` (SIGKILL) while jobs run, then checks that every
job succeeded with the right result, that the killed worker's jobs were
delivered again, that nothing is in the failed stream, and that the schedule
fired all its runs on the workers. Prints timings; exits non-zero on any failure.
"""

from __future__ import annotations

import subprocess
import sys
import time

import naq_nb as nq

N_JOBS = 200
SCHEDULE_RUNS = 3


def work(i: int) -> int:
    import time as t
    t.sleep(0.05)  # long enough that each worker holds jobs in flight when one is killed
    return i * 3


def tick() -> str:
    import socket
    return socket.gethostname()


def wait_for(what: str, pred, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"FAIL: {what} not within {timeout:g}s")
        time.sleep(0.1)


def main(url: str, victim: str) -> int:
    t0 = time.monotonic()
    nq.connect(url)
    sched = nq.schedule_sync(tick, interval=1.0, repeat=SCHEDULE_RUNS)
    futures = nq.map(work, range(N_JOBS))
    t_submitted = time.monotonic()
    wait_for("40 results before the kill", lambda: sum(f.done() for f in futures) >= 40, 60)
    done_at_kill = sum(f.done() for f in futures)
    subprocess.run(["docker", "kill", victim], check=True, capture_output=True, timeout=60)
    t_killed = time.monotonic()
    results = [f.result(timeout=120) for f in futures]
    t_done = time.monotonic()
    bad = [(i, r) for i, r in enumerate(results) if r != i * 3]
    if bad:
        raise SystemExit(f"FAIL: wrong results {bad[:5]}")

    jobs = nq.jobs(limit=None)
    ours = jobs[jobs["job_id"].isin([f.job_id for f in futures])]
    if len(ours) != N_JOBS or set(ours["status"]) != {"succeeded"}:
        raise SystemExit(f"FAIL: statuses {ours['status'].value_counts().to_dict()} for {len(ours)} jobs")
    redelivered = int((ours["attempts"] > 1).sum())
    if done_at_kill < N_JOBS and redelivered == 0:
        raise SystemExit("FAIL: the kill hit no running job (no job was delivered twice); the check proves nothing")
    failed = nq.failed()
    if len(failed):
        raise SystemExit(f"FAIL: {len(failed)} job(s) in the failed stream")

    fired = lambda: jobs_of_schedule(sched.id)  # noqa: E731
    wait_for(f"{SCHEDULE_RUNS} scheduled runs succeeded", lambda: len(fired()) >= SCHEDULE_RUNS, 60)
    t_sched = time.monotonic()
    print(f"stack check OK: {N_JOBS} jobs in {t_done - t0:.1f}s (submit {t_submitted - t0:.2f}s, "
          f"{done_at_kill} done at the kill, the rest {t_done - t_killed:.1f}s after it; "
          f"{redelivered} redelivered from the killed worker, none failed); "
          f"schedule: {SCHEDULE_RUNS} runs on workers {sorted(set(fired()))}, done at {t_sched - t0:.1f}s")
    return 0


def jobs_of_schedule(schedule_id: str) -> list[str]:
    """Worker host names that ran the schedule's occurrences (ids ``<schedule id>-<due ms>``)."""
    df = nq.jobs(limit=None)
    runs = df[df["job_id"].str.startswith(f"{schedule_id}-") & (df["status"] == "succeeded")]
    return [nq.job(j).result(timeout=30) for j in runs["job_id"]]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
