"""naq's ``naq.exceptions`` module path: ``from naq_nb.exceptions import JobNotFoundError, JobExecutionError``."""

from .core.errors import *  # noqa: F401,F403
from .core.errors import __all__  # noqa: F401
