"""Job functions for the security tests (imported by workers by path)."""

from os import system  # noqa: F401  (re-exported on purpose: a module allow-list must not cover it)
from pathlib import Path


def append_line(path, text="ran"):
    """Append one line to ``path``: the number of lines counts the runs."""
    with open(path, "a") as f:
        f.write(text + "\n")
    return text


def touch(path):
    Path(path).touch()
    return str(path)


class Evil:
    """Pickles into a call that creates ``path`` when unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def slow_line(path, text, seconds):
    """Writes "start", waits ``seconds``, then writes ``text``: the lines count the runs and their starts."""
    import time

    append_line(path, "start")
    time.sleep(seconds)
    return append_line(path, text)


def nested_list(path, depth):
    """A list nested ``depth`` deep (too deep for JSON), after counting the run in ``path``."""
    append_line(path)
    value = []
    for _ in range(depth):
        value = [value]
    return value
