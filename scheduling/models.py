"""Where Django finds the ``scheduling`` app's models: the billing domain and the scheduler
engine's state, each defined in its own room (app label ``scheduling`` for both; table names and
migrations are unchanged by the move)."""

from scheduling.billing.models import *  # noqa: F403
from scheduling.billing.models import __all__ as _billing
from scheduling.engine.models import *  # noqa: F403
from scheduling.engine.models import __all__ as _engine

__all__ = [*_billing, *_engine]
