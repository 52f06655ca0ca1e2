"""Old home of the notebook-client fixtures, kept so tests written against it still import.

The fixtures (``nb_client``, ``thread_worker``) are in conftest.py and need no import;
``wait_until`` is in helpers.py.
"""

from conftest import nb_client, thread_worker  # noqa: F401
from helpers import wait_until  # noqa: F401
