"""Exceptions of the command line (the engine's are in :mod:`naq_nb.core.errors`)."""

from __future__ import annotations

from ..core.errors import NaqException

__all__ = ["UsageError", "VoilaMissing"]


class UsageError(NaqException):
    """Bad input on the command line or in ``NAQ_*`` variables: one line on stderr, exit code 2."""


class VoilaMissing(NaqException):
    """Voilà is not installed, so the dashboard cannot be served as a page."""
