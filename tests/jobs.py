"""Importable job functions for tests (worker processes import them by path)."""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path


def add(a, b):
    return a + b


def count_words(text):
    return len(text.split())


async def async_add(a, b):
    await asyncio.sleep(0)
    return a + b


def boom(msg="boom"):
    raise ValueError(msg)


class CustomError(Exception):
    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


def custom_fail():
    raise CustomError(42, "custom")


def mark(path, token, sleep=0.0):
    """Append ``token`` to ``path`` (one line per execution), then sleep; returns token."""
    with open(path, "a") as f:
        f.write(f"{token}\n")
        f.flush()
        os.fsync(f.fileno())
    time.sleep(sleep)
    return token


def fail_until(path, succeed_on):
    """Fails until it has been called ``succeed_on`` times (counted in ``path``)."""
    p = Path(path)
    n = len(p.read_text().splitlines()) + 1 if p.exists() else 1
    with open(p, "a") as f:
        f.write(f"{time.time()}\n")
    if n < succeed_on:
        raise ConnectionError(f"attempt {n} fails")
    return n


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


async def async_sleep_for(seconds):
    await asyncio.sleep(seconds)
    return seconds


def takes_reserved(x, timeout=None, queue=None, max_retries=None):
    return {"x": x, "timeout": timeout, "queue": queue, "max_retries": max_retries}


def big_result(n):
    return b"x" * n


def with_progress(n):
    from naq_nb import progress
    for i in range(n):
        progress(i + 1, n, f"step {i + 1}")
        print(f"line {i + 1}")
    return n



# --- jobs that misbehave (tests/test_isolation.py) -------------------------------------------
def segfault():
    import signal
    os.kill(os.getpid(), signal.SIGSEGV)


def hard_exit(code=1):
    os._exit(code)


def sys_exit(code=2):
    import sys
    sys.exit(code)


def interrupt():
    raise KeyboardInterrupt


async def async_interrupt():
    raise KeyboardInterrupt


def hang(path):
    """Writes its pid to ``path``, then never returns."""
    mark(path, os.getpid())
    while True:
        time.sleep(1)


def wait_for_file(path, timeout=60.0):
    """Returns ``path``'s text once the test creates it (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.02)
    return open(path).read()


async def catch_cancels_until_file(path, timeout=60.0):
    """An async job that catches every CancelledError and goes on until ``path`` exists (bounded by
    ``timeout``); then it writes ``path`` + ".ended" and returns."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        try:
            await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            pass
    Path(path + ".ended").write_text("ended")
    return "finished anyway"


async def block_loop(path, seconds):
    """An async job that blocks its event loop (a bug this tests): one line in ``path`` per run."""
    mark(path, os.getpid())
    time.sleep(seconds)
    return "done"


def kill_own_process(path):
    import signal
    mark(path, os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)


def print_lines(n):
    for i in range(n):
        print(f"echo line {i + 1}")
    return n


def fail_until_padded(path, succeed_on, padding):
    """``fail_until`` with a large unused argument (a body near the server's max_payload)."""
    return fail_until(path, succeed_on)


def slow_pid(seconds):
    time.sleep(seconds)
    return os.getpid()


def exit_leaving_a_forked_child(pid_file, code=4):
    """Fork a helper that holds the job process's pipes open, then end the job process."""
    pid = os.fork()
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    Path(pid_file).write_text(str(pid))
    os._exit(code)


class ExitWhenUnpickled:
    """An argument whose unpickling exits the process that unpickles it."""

    def __reduce__(self):
        return (sys.exit, (3,))


def echo_value(value):
    """Prints its argument (a log line) and returns it."""
    print(value)
    return value


def start_helper():
    """Start a helper process that outlives this job (``sleep 300``) and return its pid."""
    return subprocess.Popen(["sleep", "300"]).pid


def boom_big(n):
    """Raise a ValueError whose message is ``n`` characters long."""
    raise ValueError("E" * n)


def slow_fail_until(path, succeed_on, seconds):
    """``fail_until`` after ``seconds`` of sleep (so what waits on it parks meanwhile)."""
    time.sleep(seconds)
    return fail_until(path, succeed_on)


def int_keys(n):
    """A dict keyed by ints, which JSON cannot carry as they are."""
    return {i: i for i in range(n)}


def fork_and_return(path, copy_exits=True):
    """Forks; the copy appends a line to ``path`` and then exits with sys.exit(0) or returns
    "copy-value". The job process waits for the copy, then returns "parent-value"."""
    pid = os.fork()
    if pid == 0:
        with open(path, "a") as f:
            f.write("copy\n")
        if copy_exits:
            sys.exit(0)
        return "copy-value"
    os.waitpid(pid, 0)
    return "parent-value"


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no text for you")


def raise_bad_str(path):
    """Appends a line to ``path`` (one per run), then raises an exception whose str() raises."""
    with open(path, "a") as f:
        f.write("run\n")
    raise BadStr()


class ExitsWhenPickled:
    def __reduce__(self):
        raise SystemExit(3)


def result_exits_when_pickled():
    return ExitsWhenPickled()


def returns_coroutine(a):
    """A plain function whose value is a coroutine (a lambda wrapping an async call, say)."""
    return async_add(a, 1)


def long_output(n, message_size=0):
    """Prints one line of ``n`` characters, a progress bar redrawn 2,000 times without a newline,
    and a last line without one; reports a progress message of ``message_size`` characters."""
    from naq_nb import progress
    print("x" * n)
    for i in range(2000):
        print(f"\r{i:5d} of 2000 " + "#" * 60, end="")
    print()
    if message_size:
        progress(1, 1, "m" * message_size)
    print("the end", end="")
    return n


def print_late(seconds, path):
    """Prints a line after ``seconds`` (past a short timeout, in threads mode), then creates ``path``."""
    time.sleep(seconds)
    print("a late line")
    print("and a partial one", end="")
    Path(path).write_text("printed")
    return seconds


def fail_first_with_partial_line(path):
    """Attempt 1 prints a line without a newline and fails; attempt 2 prints a whole line."""
    runs = Path(path)
    first = not runs.exists()
    runs.write_text("ran\n")
    if first:
        print("ATTEMPT-1-PARTIAL", end="")
        raise RuntimeError("first attempt")
    print("attempt 2 line")
    return "ok"


def leave_a_chatty_thread(seconds):
    """Starts a thread that prints a line every 10 ms for ``seconds``, and returns at once."""
    import threading

    def chatter():
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            print("from the thread an earlier job left")
            time.sleep(0.01)
    threading.Thread(target=chatter, daemon=True).start()
    return "left"


def print_with_a_thread_of_its_own(seconds):
    """Prints a line from a thread it starts and joins, sleeps, prints its own line."""
    import threading
    t = threading.Thread(target=print, args=("from a thread of this job",))
    t.start()
    t.join()
    time.sleep(seconds)
    print("own line")
    return "own"


def job_id_of(job):
    """Takes a Job handle as its argument, as naq's dependency example passes one."""
    return job.job_id


def open_missing(path):
    with open(path):
        pass


def raise_own_timeout():
    raise TimeoutError("my own deadline passed")


async def async_raise_own_timeout():
    raise TimeoutError("my own deadline passed")


def change_process_state(path):
    """Changes what belongs to the job process, not to this job: cwd, sys.path, the environment,
    the umask, a pending alarm, sys.stdout / sys.stderr."""
    import signal
    os.chdir(path)
    sys.path.insert(0, path)
    os.environ["NAQ_TEST_LEFT_BEHIND"] = "1"
    os.umask(0o077)
    signal.setitimer(signal.ITIMER_REAL, 300)
    sys.stdout, sys.stderr = 42, None
    return "changed"


def report_process_state():
    import signal
    print("printed")
    mask = os.umask(0o022)
    os.umask(mask)
    return {"cwd": os.getcwd(), "path0": sys.path[0], "env": os.environ.get("NAQ_TEST_LEFT_BEHIND"),
            "umask": mask, "alarm": signal.getitimer(signal.ITIMER_REAL)[0]}


def leave_a_non_daemon_thread(path):
    """Starts a non-daemon thread that waits until ``path`` exists (the test never makes it)."""
    import threading

    def wait():
        while not os.path.exists(path):
            time.sleep(0.1)
    threading.Thread(target=wait, name="left-by-a-job").start()
    return "left"


def enqueue_and_wait(a, b):
    """Enqueues ``add(a, b)`` from inside a job, naq-style (no URL), and waits for its result."""
    import naq_nb
    job = naq_nb.enqueue_sync(add, a, b)
    return naq_nb.fetch_job_result_sync(job, timeout=30)


async def async_enqueue_and_wait(a, b):
    """The async form of ``enqueue_and_wait``: runs on the worker's own loop, in its process."""
    import naq_nb
    job = await naq_nb.Queue("default").enqueue(add, a, b)
    return await naq_nb.fetch_job_result(job, timeout=30)


# --- nq.put values: where they are unpickled ---------------------------------------------------
def _unpickled_here(path, payload):
    """Unpickling a PidRecorder: notes this process's pid in ``path`` (one line per unpickling)."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return PidRecorder(path, payload)


class PidRecorder:
    """An nq.put value that records, in a file, the pid of every process that unpickles it."""

    def __init__(self, path, payload=b""):
        self.path, self.payload = path, payload

    def __reduce__(self):
        return (_unpickled_here, (self.path, self.payload))


def recorder_seen(value, hold=0.0):
    """(this job's pid, the value's type name, its payload's size); ``hold`` s so jobs overlap."""
    time.sleep(hold)
    return os.getpid(), type(value).__name__, len(value.payload)


async def async_recorder_seen(value):
    return os.getpid(), type(value).__name__, len(value.payload)


def sha256_of(data):
    import hashlib
    return hashlib.sha256(data).hexdigest()


def exit_over(value, code):
    os._exit(code)
