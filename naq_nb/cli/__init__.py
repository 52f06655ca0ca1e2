"""The ``naq`` command line."""
