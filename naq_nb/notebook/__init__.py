"""The notebook layer: local cluster, overview frames, widgets, magics, sweeps.

Nothing here is imported by ``import naq_nb``; each name is loaded on first
access (``nq.local``, ``nq.jobs``, ...), so a worker-only install stays small.
"""
