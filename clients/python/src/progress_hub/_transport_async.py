"""The transports an event goes out by, written once: this asyncio source, and
`_transport_sync.py` generated from it by `clients/python/unasync.py` (as httpcore does:
`async` and `await` dropped, each asyncio name replaced by its synchronous twin);
`tests/test_unasync.py` fails when the generated file is stale. Edit this file, then run
`python unasync.py`.

- Redis: one atomic publish per event through `publish.lua`, retried with its receipt
  (so a retry never appends twice), fenced by the run's claim.
- HTTP: `POST /api/v1/projects/{id}/events` with the receipt as `Idempotency-Key`; the
  HTTP API takes no claim, so there is no fencing in HTTP mode.

Lifecycle (threads and fork hooks, or one publisher per event loop) is not here: it
differs between the two and is written by hand in `_sync.py` and `aio.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from . import _contract, _fence, _redis
from ._coalesce import Held
from ._redis import (
    CLAIM_COUNTER_TTL,
    RUN_FIELDS,
    Claim,
    Target,
    claim_counter_key,
    script_call,
    state_key,
)
from ._retry import RETRIED_STATUSES, TRANSIENT, backoff_delays, refused
from .config import Config, announce
from .errors import PublishRefused, PublishUnavailable

logger = logging.getLogger("progress_hub")


class AsyncRedisTransport:
    """One atomic publish per event through `publish.lua`, retried with its receipt."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.target = Target.parse(config.redis_url)
        # Made on first use, inside the retry loop: a cluster client connects (to learn
        # the slots) in its constructor, and that is retried as any command is.
        self._client: Any = None
        self._script: Any = None
        # The history policy the hubs announce, and when it was read (see `_history`).
        self._policy: Config | None = None
        self._policy_read_at: float | None = None
        announce(config)

    def _connect(self) -> Any:
        """The client (made now if not yet: call inside `_retrying`)."""
        if self._client is None:
            client = _redis.async_client(self.target, self.config)
            self._script = client.register_script(_contract.publish_script())
            self._client = client
        return self._client

    @property
    def client(self) -> Any:
        """The redis-py client (connects a cluster's now, unretried: the benchmark's)."""
        return self._connect()

    @property
    def script(self) -> Any:
        """The registered `publish.lua` (the benchmark pipelines it)."""
        self._connect()
        return self._script

    async def send(self, project: str, held: Held) -> str:
        what = f"{held.event.name} of project {project}"
        retry = held.retry  # every attempt after the first is one: it may have been done

        async def call() -> Any:
            nonlocal retry
            await _redis.follow_primary_async(self._connect())  # makes the script too
            config = await self._history()
            keys, argv = script_call(
                project, held.prepared, held.receipt, held.claim, self.target, config, retry
            )
            retry = True
            sent, begun = _redis.published(await self._script(keys=keys, args=argv))
            # The tags' indexes, and every project's when a run began, live in their own
            # slots: written after the script, not with it (a retry after a failure here
            # rewrites the tags'; the receipt keeps the publish itself from repeating).
            tags = held.prepared.state.tags
            for key, keep in _redis.tag_index_writes(tags, config, begun):
                pipe = self._connect().pipeline(transaction=False)
                _redis.write_tag_index(pipe, key, project, keep)
                await pipe.execute()
            return sent

        return str(await self._retrying(what, call))

    async def _history(self) -> Config:
        """The configuration to publish with: this one, with the history policy the hubs
        announce in place of its own (read at most every 30 s; its own while none is)."""
        now = time.monotonic()
        read_at = self._policy_read_at
        if read_at is None or now - read_at >= _redis.HISTORY_POLICY_EVERY:
            key, names = _redis.HISTORY_POLICY_KEY, _redis.HISTORY_POLICY_FIELDS
            fields = await self._connect().hmget(key, names)
            policy = _redis.follow_policy(self.config, fields)
            own = self.config
            if policy is not None and policy != self._policy and policy != own:
                logger.info(
                    "publishing with the history policy the hubs announce "
                    "(history_len=%d history_bytes=%d retention=%d); this process's own "
                    "(history_len=%d history_bytes=%d retention=%d) is ignored",
                    policy.history_len,
                    policy.history_bytes,
                    policy.retention,
                    own.history_len,
                    own.history_bytes,
                    own.retention,
                )
            self._policy, self._policy_read_at = policy, now
        return self._policy or self.config

    async def next_claim(self, job: str) -> Claim | None:
        """A new claim of `job`: its token is larger than every earlier claim's (a
        retried INCR may skip a number; it never repeats one)."""
        key = claim_counter_key(job)

        async def incr() -> Any:
            pipe = self._connect().pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, CLAIM_COUNTER_TTL)
            return (await pipe.execute())[0]

        return Claim(job, int(await self._retrying(f"a claim of job {job}", incr)))

    async def claim_is_current(self, project: str, claim: Claim) -> bool:
        """Whether a publish under `claim` would be accepted now: `publish.lua`'s fence
        rule (`_fence`), on the fields it reads, read in one atomic round trip. False
        once a newer claim of its job has published, its job completed (by any claim,
        this one too), or a later job took the project."""

        async def read() -> Any:
            pipe = self._connect().pipeline(transaction=True)
            _fence.reads(pipe, project, claim)
            return await pipe.execute()

        replies = await self._retrying(f"the claim of job {claim.job}", read)
        return _fence.accepts(replies, claim)

    async def run_fields(self, project: str) -> dict[str, str | None]:
        """The state's fields that say whose run it is and how far its units are
        (`RUN_FIELDS`), read at once."""

        async def read() -> Any:
            return await self._connect().hmget(state_key(project), RUN_FIELDS)

        values = await self._retrying(f"the state of project {project}", read)
        return dict(zip(RUN_FIELDS, values, strict=True))

    async def _retrying(self, what: str, call: Callable[[], Any]) -> Any:
        """Runs `call` until it succeeds, retrying while Redis is unreachable, for up to
        `retry_for` (the publish script's receipt makes a retried publish idempotent)."""
        import redis.exceptions as rex

        deadline = time.monotonic() + self.config.retry_for
        delays = backoff_delays()
        warned = False
        while True:
            try:
                return await call()
            except TRANSIENT as err:
                now = time.monotonic()
                if now >= deadline:
                    raise PublishUnavailable(
                        f"Redis unreachable for {self.config.retry_for:g} s; "
                        f"{what} may not be published: {err}"
                    ) from err
                if not warned:
                    logger.warning("Redis unavailable; retrying %s: %s", what, err)
                    warned = True
                await asyncio.sleep(min(next(delays), deadline - now))
            except rex.RedisError as err:
                raise refused(what, err) from err

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class AsyncHttpTransport:
    """`POST /api/v1/projects/{id}/events` with the receipt as `Idempotency-Key`."""

    def __init__(self, config: Config) -> None:
        import httpx

        self.config = config
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        base = (config.hub_url or "").rstrip("/")
        timeout = config.command_timeout
        self.client = httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout)
        announce(config)

    async def send(self, project: str, held: Held) -> str | None:
        import httpx

        deadline = time.monotonic() + self.config.retry_for
        delays = backoff_delays()
        while True:
            try:
                response = await self.client.post(
                    f"/api/v1/projects/{project}/events",
                    json=held.body(),
                    headers={"Idempotency-Key": held.receipt},
                )
                if response.status_code == 202:
                    sent: str | None = response.json().get("id")
                    return sent
                if response.status_code not in RETRIED_STATUSES:
                    raise PublishRefused(response.status_code, response.text)
                why = f"HTTP {response.status_code}"
            except httpx.TransportError as err:
                why = str(err) or type(err).__name__
            now = time.monotonic()
            if now >= deadline:
                raise PublishUnavailable(
                    f"hub at {self.config.hub_url} unreachable for {self.config.retry_for:g} s; "
                    f"{held.event.name} of project {project} may not be published: {why}"
                )
            await asyncio.sleep(min(next(delays), deadline - now))

    async def next_claim(self, job: str) -> Claim | None:
        return None  # the HTTP API takes no claim: no fencing in HTTP mode

    async def claim_is_current(self, project: str, claim: Claim) -> bool:
        return True

    async def run_fields(self, project: str) -> dict[str, str | None]:
        return {}  # the HTTP API tells no fence: nothing is known of the run

    async def close(self) -> None:
        await self.client.aclose()
