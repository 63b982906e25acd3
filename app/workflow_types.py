"""What workflow modules import: `from app.workflow_types import Checkpoint, Sampler, ...`.

The markers live in app.registry.fields; this name stays so that workflow modules written for
earlier versions keep working unchanged.
"""

from app.registry.fields import *  # noqa: F403
from app.registry.fields import __all__ as __all__
