"""Pieces of ``bench/peers.py``: servers and processes, one adapter module per library, the report.

Each ``lib_*.py`` module is imported twice: by the bench driver (the client side, inside that
library's venv) and by the library's own worker CLI (which finds the task functions in it).
"""
