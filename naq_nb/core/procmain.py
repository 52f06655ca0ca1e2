"""Entry point of a job process: ``python -m naq_nb.core.procmain`` (see :mod:`naq_nb.core.procchild`).

Kept apart so that nothing imports it before ``runpy`` runs it.
"""

from naq_nb.core.procchild import main

if __name__ == "__main__":
    main()
