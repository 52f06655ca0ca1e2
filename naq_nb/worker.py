"""naq's ``naq.worker`` module path: ``from naq_nb.worker import Worker``."""

from .client.compat import list_workers, list_workers_sync  # noqa: F401
from .client.naq_names import WORKER_STATUS  # noqa: F401
from .client.services import Worker  # noqa: F401
