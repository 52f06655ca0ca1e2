"""naq's ``naq.scheduler`` module path: ``from naq_nb.scheduler import Scheduler``."""

from .client.services import Scheduler  # noqa: F401
