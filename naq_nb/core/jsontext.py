"""JSON read from outside the process (a message header, a bucket record, a server reply): one
reader, so that nesting too deep for Python's json, which then raises RecursionError rather than
ValueError, is refused as the malformed text it is wherever such text is read."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads"]


def loads(text: str | bytes | bytearray) -> Any:
    """``text`` decoded; a ValueError for any malformed text, nesting too deep included."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None
