"""`ProgressService` for asyncio (FastAPI handlers, async workers): the same five
methods as coroutines, the same semantics as the synchronous one.

One publisher per event loop (a `redis.asyncio` connection belongs to its loop). A
held `progress_update` goes out at the end of its window from a task on the loop. When
the loop ends first (`asyncio.run` cancels the flush task), it goes out at once through
a synchronous connection; a loop closed without cancelling its tasks leaves it to the
next publish of the project, on any loop, which sends it first (and, failing that, to
an exit hook). `await progress_hub.aio.flush()` before the loop ends sends it on the
loop's own connection.

A loop's publisher closes its connections on the loop: when the loop ends (`asyncio.run`
closes the loop's async generators, and the publisher keeps one open for this), and
when `progress_hub.configure` replaces it (in the background, on the loop, once the
publishes still in flight on it have finished: they complete on the old connections).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Sequence

from . import _coalesce, _event, _run, _sync
from ._coalesce import Held, Hold, Slot
from ._redis import Claim
from ._sync import config as config  # read here by the service, as in `_sync`
from ._transport_async import AsyncHttpTransport, AsyncRedisTransport
from .config import Config
from .errors import PublishError, StaleClaim

__all__ = ["ProgressService", "flush"]

logger = logging.getLogger("progress_hub")


class _Publisher:
    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = weakref.ref(loop)
        self.transport: AsyncRedisTransport | AsyncHttpTransport = (
            AsyncHttpTransport(config) if config.hub_url else AsyncRedisTransport(config)
        )
        self.coalesce = config.hub_url is None
        self.slots: dict[str, tuple[asyncio.Lock, Slot]] = {}
        #: The map's size after the last sweep; the next sweep is due at twice it.
        self.swept_at = 0
        self.flushes: set[asyncio.Task[None]] = set()
        #: Keeps the publisher's connections open until its loop ends (see `_live`).
        self._lifetime: AsyncIterator[None] | None = None
        self._closed = False
        #: Calls using the transport right now; a retired publisher closes it after them.
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def _using(self) -> AsyncIterator[None]:
        """Counts a call that uses the transport (see `close`)."""
        await self._begin()
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _begin(self) -> None:
        """Starts `_live` (once): called by everything that uses the transport."""
        if self._lifetime is None and not self._closed:
            self._lifetime = self._live()
            await anext(self._lifetime)

    async def _live(self) -> AsyncIterator[None]:
        """Closes the connections on their own loop when it ends: `asyncio.run` (and any
        runner that calls `loop.shutdown_asyncgens()`) closes the loop's open async
        generators after cancelling its tasks, and this one's `finally` then runs on the
        loop. A loop closed without that step drops the connections with itself."""
        try:
            yield
        finally:
            await self.close()

    async def close(self) -> None:
        """Sends what it holds, waits for the calls still using the transport (a publish
        in flight when `configure` replaced this publisher finishes on it), then closes
        the transport (once)."""
        if self._closed:
            return
        self._closed = True
        await self.flush()
        await self._idle.wait()
        await self.transport.close()

    def retire(self) -> None:
        """Replaced (the configuration changed): closes on its loop, in the background."""
        task = asyncio.get_running_loop().create_task(self.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

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

    async def publish(
        self, project: str, event: _event.Event, tags: Sequence[str] | None = None
    ) -> str | None:
        """Publishes `event`; `tags` (at most 8 of ``A-Z a-z 0-9 _ - . : @``, 1 to 64
        each) become the tags of the project's run: `GET /api/v1/projects?tag=` lists it."""
        checked = None if tags is None else _event.check_tags(tags)
        async with self._using():
            return await self._publish(project, event, checked)

    async def _publish(
        self, project: str, event: _event.Event, tags: tuple[str, ...] | None = None
    ) -> str | None:
        prepared = _event.prepare(event, project, self.config.locale, tags)
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
                        async with self._using():
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
        async with self._using():
            await self._flush()

    async def _flush(self) -> None:
        for project, (lock, slot) in list(self.slots.items()):
            async with lock:
                held = _coalesce.take_now(slot, time.monotonic())
                if held is None:
                    continue
                with contextlib.suppress(StaleClaim):  # its run is over
                    await self.transport.send(project, held)

    async def next_claim(self, job: str) -> Claim | None:
        async with self._using():
            return await self.transport.next_claim(job)

    async def claim_is_current(self, project: str, claim: Claim) -> bool:
        async with self._using():
            return await self.transport.claim_is_current(project, claim)

    async def run_fields(self, project: str) -> dict[str, str | None]:
        async with self._using():
            return await self.transport.run_fields(project)

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
#: Replaced publishers closing in the background (a task needs a strong reference).
_closing: set[asyncio.Task[None]] = set()
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


def publisher() -> _Publisher:
    """The running loop's publisher (a new one when the configuration changed: the old
    one is closed on the loop)."""
    global _pid
    if _pid != os.getpid():
        _publishers.clear()
        _everyone.clear()
        _orphans.clear()
        _closing.clear()
        _pid = os.getpid()
    loop = asyncio.get_running_loop()
    current = _publishers.get(loop)
    if current is None or current.config is not config():
        old, current = current, _Publisher(config(), loop)
        _publishers[loop] = current
        _everyone.add(current)
        weakref.finalize(loop, _adopt, current.slots).atexit = False
        if old is not None:
            old.retire()
    return current


async def flush() -> None:
    """Sends every `progress_update` this loop's publisher holds, now."""
    await publisher().flush()


async def next_claim(job: str) -> Claim | None:
    """A new claim of `job` (its fencing token is larger than every earlier one's)."""
    return await publisher().next_claim(job)


def _flush_at_exit() -> None:
    if _pid != os.getpid():
        return
    pending = list(_orphans) + [item for p in list(_everyone) for item in p.take_pending()]
    _orphans.clear()
    if not pending:
        return
    sender = _sync.Publisher(config())
    for project, held in pending:
        try:
            sender.transport.send(project, held)
        except PublishError as err:
            logger.error("a held progress_update of %s could not be published: %s", project, err)
    sender.transport.close()


atexit.register(_flush_at_exit)


# Last: the service calls back into this module's `publisher()` and `config()`.
from ._service_async import ProgressService  # noqa: E402
