"""The notebook extra's optional imports, with an error that says how to get them."""

from __future__ import annotations

from types import ModuleType

__all__ = ["pandas"]


def pandas(for_what: str) -> ModuleType:
    """The pandas module; ``ModuleNotFoundError`` naming ``for_what`` and the extra that brings it
    (a plain ``pip install naq_nb`` has no pandas: the engine and client do not need it)."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"{for_what} needs pandas, which is not installed: pip install 'naq_nb[notebook]'", name="pandas"
        ) from exc
    return pd
