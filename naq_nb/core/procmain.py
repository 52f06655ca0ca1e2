"""Entry point of a job process (see :mod:`naq_nb.core.procchild`).

Run by path (``runpy.run_path``), not with ``-m``, which would import the
whole package first: the job process then starts without the NATS client, and
the package's ``__init__`` runs only when a job first touches ``naq_nb.<name>``.
Its last argument is the crash-log path.
"""

import importlib.util
import sys


def _lazy_package() -> None:
    # A package module whose __init__ runs on first attribute use; submodules import as usual.
    spec = importlib.util.find_spec("naq_nb")
    loader = spec.loader if spec is not None else None
    if spec is None or loader is None:
        return
    pkg = importlib.util.module_from_spec(spec)

    def __getattr__(name: str) -> object:
        del pkg.__dict__["__getattr__"]
        loader.exec_module(pkg)  # the real __init__, into this same module object
        return getattr(pkg, name)

    pkg.__dict__["__getattr__"] = __getattr__  # a module-level __getattr__ (PEP 562), removed by its first call
    sys.modules["naq_nb"] = pkg


if __name__ == "__main__":
    if "naq_nb" not in sys.modules:
        _lazy_package()
    from naq_nb.core.procchild import main

    main(sys.argv[-1])
