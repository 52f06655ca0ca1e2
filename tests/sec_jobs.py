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
