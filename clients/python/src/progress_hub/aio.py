"""`ProgressService` for asyncio (FastAPI handlers, async workers): the same five
methods as coroutines, the same semantics as the synchronous one.

One publisher per event loop (a `redis.asyncio` connection belongs to its loop). A
held `progress_update` goes out at the end of its window from a task on the loop. When
the loop ends first (`asyncio.run` cancels the flush task), it goes out at once through
a synchronous connection; a loop closed without cancelling its tasks leaves it to the
next publish of the project, on any loop, which sends it first (and, failing that, to
an exit hook). `await progress_hub.aio.flush()` before the loop ends sends it on the
loop's own connection.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from . import _coalesce, _contract, _event, _run, _sync
from ._coalesce import Held, Hold, Slot
from ._redis import (
    CLAIM_COUNTER_TTL,
    Claim,
    Target,
    async_client,
    claim_counter_key,
    follow_primary_async,
    script_call,
)
from ._sync import TRANSIENT, backoff_delays, refused
from .config import Config
from .errors import PublishError, PublishRefused, PublishUnavailable, StaleClaim

__all__ = ["ProgressService", "flush"]

logger = logging.getLogger("progress_hub")


class _RedisTransport:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.target = Target.parse(config.redis_url)
        self.client = async_client(self.target, config)
        self.script = self.client.register_script(_contract.publish_script())

    async def send(self, project: str, held: Held) -> str | None:
        keys, argv = script_call(
            project, held.prepared, held.receipt, held.claim, self.target, self.config
        )
        what = f"{held.event.name} of project {project}"

        async def call() -> Any:
            await follow_primary_async(self.client)
            return await self.script(keys=keys, args=argv)

        return str(await self._retrying(what, call))

    async def next_claim(self, job: str) -> Claim | None:
        key = claim_counter_key(job)

        async def incr() -> Any:
            pipe = self.client.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, CLAIM_COUNTER_TTL)
            return (await pipe.execute())[0]

        return Claim(job, int(await self._retrying(f"a claim of job {job}", incr)))

    async def _retrying(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """As the synchronous transport's: retried while Redis is unreachable."""
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


class _HttpTransport:
    def __init__(self, config: Config) -> None:
        import httpx

        self.config = config
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        base = (config.hub_url or "").rstrip("/")
        self.client = httpx.AsyncClient(
            base_url=base, headers=headers, timeout=config.command_timeout
        )

    async def send(self, project: str, held: Held) -> str | None:
        import httpx

        deadline = time.monotonic() + self.config.retry_for
        delays = backoff_delays()
        while True:
            try:
                response = await self.client.post(
                    f"/api/v1/projects/{project}/events",
                    json=held.event.to_json(),
                    headers={"Idempotency-Key": held.receipt},
                )
                if response.status_code == 202:
                    sent: str | None = response.json().get("id")
                    return sent
                if response.status_code not in (502, 503, 504):
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
        return None


class _Publisher:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = weakref.ref(loop)
        self.transport: _RedisTransport | _HttpTransport = (
            _HttpTransport(config) if config.hub_url else _RedisTransport(config)
        )
        self.coalesce = config.hub_url is None
        self.slots: dict[str, tuple[asyncio.Lock, Slot]] = {}
        #: The map's size after the last sweep; the next sweep is due at twice it.
        self.swept_at = 0
        self.flushes: set[asyncio.Task[None]] = set()

    def _slot(self, project: str) -> tuple[asyncio.Lock, Slot]:
        entry = self.slots.get(project)
        if entry is None:
            if len(self.slots) >= 2 * max(self.swept_at, _coalesce.SWEEP_FLOOR):
                self._sweep()
            entry = self.slots[project] = (asyncio.Lock(), Slot())
        return entry

    def _sweep(self) -> None:
        """Forgets idle projects' slots. No await between taking a slot and its (free)
        lock, and a scheduled flush keeps its slot, so no user of a slot loses it."""
        now, window = time.monotonic(), self.config.coalesce_window
        for project, (lock, slot) in list(self.slots.items()):
            if not lock.locked() and _coalesce.forgettable(slot, now, window):
                del self.slots[project]
        self.swept_at = len(self.slots)

    async def publish(self, project: str, event: _event.Event) -> str | None:
        prepared = _event.prepare(event, project, self.config.locale)
        held = Held(event, prepared, _event.new_trace_id(), _run.claim())
        if not self.coalesce:
            return await self.transport.send(project, held)
        lock, slot = self._slot(project)
        async with lock:
            # What an ended loop still holds for the project goes out first, in order.
            for orphan in _orphans_of(project, self):
                with contextlib.suppress(StaleClaim):  # its run is over
                    await self.transport.send(project, orphan)
            decision = _coalesce.decide(slot, held, time.monotonic(), self.config.coalesce_window)
            if isinstance(decision, Hold):
                if decision.schedule:
                    give_up = time.monotonic() + _coalesce.FLUSH_RETRY_FOR
                    task = asyncio.get_running_loop().create_task(
                        self._flush_at(project, decision.flush_at, give_up)
                    )
                    self.flushes.add(task)
                    task.add_done_callback(self.flushes.discard)
                return None
            if decision.flushed is not None:
                try:
                    await self.transport.send(project, decision.flushed)
                except StaleClaim:
                    pass
                except PublishError:
                    slot.keep(decision.flushed)
                    raise
            return await self.transport.send(project, decision.event)

    async def _flush_at(self, project: str, at: float, give_up: float) -> None:
        lock, slot = self._slot(project)
        sending: Held | None = None
        try:
            while True:
                await asyncio.sleep(max(at - time.monotonic(), 0.0))
                async with lock:
                    held = sending = _coalesce.take_due(slot, time.monotonic())
                    if held is None:
                        return
                    try:
                        await self.transport.send(project, held)
                        return
                    except StaleClaim:
                        return
                    except PublishError as err:
                        if time.monotonic() >= give_up:
                            logger.error(
                                "a held progress_update of %s could not be published: %s",
                                project,
                                err,
                            )
                            return
                        slot.keep(held)
                        sending = None
                        slot.flush_scheduled = True
                        at = time.monotonic() + self.config.coalesce_window
        except asyncio.CancelledError:
            # The loop is ending (`asyncio.run` cancels what is left): what is held goes
            # out now, before anything a later loop publishes (its receipt makes a send
            # that was in flight idempotent).
            held = sending or _coalesce.take_now(slot, time.monotonic())
            slot.flush_scheduled = False
            if held is not None:
                _send_now(project, held)
            raise

    async def flush(self) -> None:
        for project, (lock, slot) in list(self.slots.items()):
            async with lock:
                held = _coalesce.take_now(slot, time.monotonic())
                if held is None:
                    continue
                with contextlib.suppress(StaleClaim):  # its run is over
                    await self.transport.send(project, held)

    def take_pending(self) -> list[tuple[str, Held]]:
        """What is still held, taken out (for the exit hook)."""
        return _take_pending(self.slots)

    def dead(self) -> bool:
        """Its loop is closed (or gone): its flush tasks will never run."""
        loop = self.loop()
        return loop is None or loop.is_closed()


def _take_pending(slots: dict[str, tuple[asyncio.Lock, Slot]]) -> list[tuple[str, Held]]:
    out = []
    for project, (_, slot) in list(slots.items()):
        held = _coalesce.take_now(slot, time.monotonic())
        if held is not None:
            out.append((project, held))
    return out


_publishers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Publisher] = (
    weakref.WeakKeyDictionary()
)
_everyone: weakref.WeakSet[_Publisher] = weakref.WeakSet()
#: Held updates of loops that were garbage-collected, in the order they were taken.
_orphans: list[tuple[str, Held]] = []
_pid = os.getpid()


def _adopt(slots: dict[str, tuple[asyncio.Lock, Slot]]) -> None:
    """A loop was collected: what its publisher held waits here for the next publish of
    the project (on any loop) or the exit hook. No I/O: this runs inside the GC."""
    _orphans.extend(_take_pending(slots))


def _orphans_of(project: str, adopter: _Publisher) -> list[Held]:
    """What ended loops still hold for `project`, taken out, oldest first."""
    found = [held for name, held in _orphans if name == project]
    _orphans[:] = [(name, held) for name, held in _orphans if name != project]
    for other in list(_everyone):
        if other is adopter or not other.dead():
            continue
        entry = other.slots.get(project)
        if entry is not None:
            held = _coalesce.take_now(entry[1], time.monotonic())
            if held is not None:
                found.append(held)
    return found


def _send_now(project: str, held: Held) -> None:
    """Sends a held update through the synchronous transport (its loop is ending)."""
    try:
        _sync.publisher().transport.send(project, held)
    except StaleClaim:
        pass  # its run is over
    except PublishError as err:
        logger.error("a held progress_update of %s could not be published: %s", project, err)


def _publisher() -> _Publisher:
    global _pid
    if _pid != os.getpid():
        _publishers.clear()
        _everyone.clear()
        _orphans.clear()
        _pid = os.getpid()
    loop = asyncio.get_running_loop()
    publisher = _publishers.get(loop)
    if publisher is None or publisher.config is not _sync.config():
        publisher = _publishers[loop] = _Publisher(_sync.config(), loop)
        _everyone.add(publisher)
        weakref.finalize(loop, _adopt, publisher.slots).atexit = False
    return publisher


async def flush() -> None:
    """Sends every `progress_update` this loop's publisher holds, now."""
    await _publisher().flush()


async def next_claim(job: str) -> Claim | None:
    """A new claim of `job` (its fencing token is larger than every earlier one's)."""
    return await _publisher().transport.next_claim(job)


def _flush_at_exit() -> None:
    if _pid != os.getpid():
        return
    pending = list(_orphans) + [item for p in list(_everyone) for item in p.take_pending()]
    _orphans.clear()
    if not pending:
        return
    sender = _sync.Publisher(_sync.config())
    for project, held in pending:
        try:
            sender.transport.send(project, held)
        except PublishError as err:
            logger.error("a held progress_update of %s could not be published: %s", project, err)
    sender.transport.close()


atexit.register(_flush_at_exit)


async def _publish(project_id: str, event: _event.Event, stage: str | None) -> str | None:
    project = _event.check_project_id(project_id)
    sent = await _publisher().publish(project, event)
    _run.note(event.name, stage)
    return sent


class ProgressService:
    """The asyncio twin of `progress_hub.ProgressService`: same methods, as coroutines."""

    @staticmethod
    async def publish_progress(
        project_id: str,
        status: str,
        progress: int,
        current_stage: str,
        estimated_remaining: int | None = None,
    ) -> str | None:
        event = _event.progress_update(status, progress, current_stage, estimated_remaining)
        sent = await _publish(project_id, event, status)
        logger.info("[Project %s] Progress: %s%% - %s", project_id, progress, current_stage)
        return sent

    @staticmethod
    async def publish_stage_change(
        project_id: str, previous_stage: str, current_stage: str, progress: int
    ) -> str | None:
        event = _event.stage_change(previous_stage, current_stage, progress)
        sent = await _publish(project_id, event, current_stage)
        logger.info("[Project %s] Stage: %s → %s", project_id, previous_stage, current_stage)
        return sent

    @staticmethod
    async def publish_log(project_id: str, level: str, message: str) -> str | None:
        event = _event.log(level, message)
        sent = await _publish(project_id, event, None)
        logger.log(getattr(logging, level), "[Project %s] %s", project_id, message)
        return sent

    @staticmethod
    async def publish_error(
        project_id: str,
        error_code: str,
        error_message: str,
        stage: str,
        retry_count: int = 0,
        max_retries: int = 3,
    ) -> str | None:
        locale = _sync.config().locale
        event = _event.error(error_code, error_message, stage, retry_count, max_retries, locale)
        sent = await _publish(project_id, event, stage)
        logger.error("[Project %s] Error: %s - %s", project_id, error_code, error_message)
        return sent

    @staticmethod
    async def publish_complete(
        project_id: str, status: str, youtube_url: str | None = None
    ) -> str | None:
        event = _event.complete(status, youtube_url)
        sent = await _publish(project_id, event, None)
        logger.info("[Project %s] Generation complete: %s", project_id, status)
        return sent
