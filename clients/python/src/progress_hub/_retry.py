"""What a publish retries and how long it waits between attempts: shared by the
synchronous and the asyncio transports (only the sleep differs, and it is theirs)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import redis.exceptions as rex

from .errors import PublishError, StaleClaim

#: What is retried until `retry_for` runs out: Redis out of reach, and a cluster that is
#: failing over, resharding or not reachable at all (no node answers, a slot not covered
#: yet).
TRANSIENT: tuple[type[Exception], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.ClusterDownError,
    rex.TryAgainError,
    rex.ClusterError,
    rex.RedisClusterException,
)

#: The hub's answers in HTTP mode that mean "not now" (retried), not "not this".
RETRIED_STATUSES = (502, 503, 504)


def backoff_delays() -> Iterator[float]:
    """Capped exponential backoff with jitter: 50 ms, 100 ms, ... 2 s."""
    delay = 0.05
    while True:
        yield delay * (0.5 + random.random() / 2)
        delay = min(delay * 2, 2.0)


def refused(what: str, err: Exception) -> PublishError:
    """Any other Redis error, typed: `StaleClaim` for the script's fencing refusal."""
    if str(err).startswith("STALE"):
        return StaleClaim(str(err))
    return PublishError(f"Redis refused {what}: {err}")
