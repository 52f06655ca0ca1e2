"""Exceptions of the notebook layer (the engine's are in :mod:`naq_nb.core.errors`)."""

from __future__ import annotations

from ..core.errors import JobNotFoundError, NaqException

__all__ = ["SweepNotFoundError", "StoreBusyError", "DockerError"]


class SweepNotFoundError(JobNotFoundError):
    """No sweep with that id on the server (never created, or its record expired)."""


class StoreBusyError(RuntimeError):
    """The store directory is served by another live process."""


class DockerError(NaqException, RuntimeError):
    """Docker is missing, its daemon does not answer, or the NATS image/container can't be had."""
