"""progress-hub's Python SDK: the original `ProgressService`, publishing through the
hub's publish path (ids, history, state, resume, coalescing, fencing).

    from progress_hub import ProgressService          # synchronous (Celery tasks)
    from progress_hub.aio import ProgressService      # asyncio
    from progress_hub import tokens                   # tokens.mint(): a page's token
    async for frame in progress_hub.watch(hub_url, projects=[...]): ...  # asyncio
"""

from . import tokens as tokens  # progress_hub.tokens.mint
from ._event import InvalidEvent
from ._run import tagged
from ._service_sync import ProgressService
from ._sync import configure, flush
from ._watch import Frame, watch
from .config import Config
from .errors import (
    InvalidConfig,
    PublishError,
    PublishRefused,
    PublishUnavailable,
    StaleClaim,
    WatchRefused,
)
from .tokens import mint_token

__all__ = [
    "Config",
    "Frame",
    "InvalidConfig",
    "InvalidEvent",
    "ProgressService",
    "PublishError",
    "PublishRefused",
    "PublishUnavailable",
    "StaleClaim",
    "WatchRefused",
    "configure",
    "flush",
    "mint_token",
    "tagged",
    "watch",
]
__version__ = "0.1.0"
