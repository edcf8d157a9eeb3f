"""The synchronous publisher's lifecycle: Celery tasks, scripts, threads. Written by
hand (the transports it sends through are generated from their asyncio source).

Thread-safe: publishes of one project are serialized by the project's lock (so the
coalescing order is the publish order); the Redis client is redis-py's thread-safe
pool. Fork-safe: the process's publisher belongs to the process that made it; a child
(Celery's prefork pool forks after import) builds its own on first use and never
touches its parent's connections or held updates.
"""

from __future__ import annotations

import atexit
import enum
import logging
import multiprocessing.util
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _coalesce, _event, _run
from ._coalesce import Held, Hold, Slot
from ._redis import Claim
from ._transport_sync import HttpTransport, RedisTransport
from .config import Config, from_env
from .errors import PublishError, StaleClaim

logger = logging.getLogger("progress_hub")


@dataclass
class _Entry:
    """A project's coalescing slot, its lock, and how many are using it right now (a
    publish, a scheduled flush): only an unused entry may be swept from the map."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    slot: Slot = field(default_factory=Slot)
    users: int = 0


class Publisher:
    """One process's publisher: validation done, it coalesces and sends."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.locale = config.locale
        self.transport: RedisTransport | HttpTransport = (
            HttpTransport(config) if config.hub_url else RedisTransport(config)
        )
        # HTTP mode: the hub coalesces.
        self.coalesce = config.hub_url is None
        self._entries: dict[str, _Entry] = {}
        self._entries_lock = threading.Lock()
        #: The map's size after the last sweep; the next sweep is due at twice it.
        self._swept_at = 0
        self._timers: set[threading.Timer] = set()
        #: Calls using the transport now; a retired publisher closes after the last.
        self._busy = threading.Lock()
        self._in_flight = 0
        self._retired = False
        self._closed = False

    def _enter(self) -> bool:
        """Counts a call that uses the transport; False: retired (use the current one)."""
        with self._busy:
            if self._retired:
                return False
            self._in_flight += 1
            return True

    def _leave(self) -> None:
        with self._busy:
            self._in_flight -= 1
            last = self._retired and self._in_flight == 0
        if last:
            self.close()

    def in_flight(self) -> int:
        """How many calls are using the transport now."""
        with self._busy:
            return self._in_flight

    def closed(self) -> bool:
        return self._closed

    def retire(self) -> None:
        """Replaced by a new configuration: closes now when nothing uses it, else once
        the last call using it (a send in another thread) has finished, on that thread.
        A call that comes after goes to the current publisher."""
        with self._busy:
            self._retired = True
            idle = self._in_flight == 0
        if idle:
            self.close()

    def _use(self, project: str) -> _Entry:
        """The project's entry, counted as used until `_done`."""
        with self._entries_lock:
            entry = self._entries.get(project)
            if entry is None:
                if len(self._entries) >= 2 * max(self._swept_at, _coalesce.SWEEP_FLOOR):
                    self._sweep()
                entry = self._entries[project] = _Entry()
            entry.users += 1
            return entry

    def _done(self, entry: _Entry) -> None:
        with self._entries_lock:
            entry.users -= 1

    def _sweep(self) -> None:
        """Forgets the entries of idle projects, so a long-lived worker's map holds about
        as many as it has active projects. Called with `_entries_lock` held."""
        now, window = time.monotonic(), self.config.coalesce_window
        for project, entry in list(self._entries.items()):
            if entry.users == 0 and _coalesce.forgettable(entry.slot, now, window):
                del self._entries[project]
        self._swept_at = len(self._entries)

    def hold(
        self,
        project: str,
        event: _event.Event,
        claim: Claim | None,
        tags: tuple[str, ...] | None = None,
    ) -> Held:
        prepared = _event.prepare(event, project, self.locale, tags)
        return Held(event, prepared, _event.new_trace_id(), claim)

    def publish(
        self, project: str, event: _event.Event, tags: Sequence[str] | None = None
    ) -> str | None:
        """Publishes `event`; `tags` (at most 8 of ``A-Z a-z 0-9 _ - . : @``, 1 to 64
        each) become the tags of the project's run: `GET /api/v1/projects?tag=` lists it."""
        checked = None if tags is None else _event.check_tags(tags)
        if not self._enter():
            return publisher().publish(project, event, checked)
        try:
            return self._publish(project, event, checked)
        finally:
            self._leave()

    def _publish(
        self, project: str, event: _event.Event, tags: tuple[str, ...] | None = None
    ) -> str | None:
        held = self.hold(project, event, _run.claim(), tags)
        if not self.coalesce:
            return self.transport.send(project, held)
        entry = self._use(project)
        try:
            with entry.lock:
                return self._publish_locked(project, entry, held)
        finally:
            self._done(entry)

    def _publish_locked(self, project: str, entry: _Entry, held: Held) -> str | None:
        slot = entry.slot
        decision = _coalesce.decide(slot, held, time.monotonic(), self.config.coalesce_window)
        if isinstance(decision, Hold):
            if decision.schedule:
                give_up = time.monotonic() + _coalesce.FLUSH_RETRY_FOR
                self._schedule(project, entry, decision.flush_at, give_up)
            return None
        if decision.flushed is not None:
            try:
                self.transport.send(project, decision.flushed)
            except StaleClaim:
                pass  # its run is over; the event itself decides below
            except PublishError:
                slot.keep(decision.flushed)  # its timer tries again
                raise
        return self.transport.send(project, decision.event)

    def _schedule(self, project: str, entry: _Entry, at: float, give_up: float) -> None:
        """A timer flushes the entry's held update at `at` (the end of its window)."""
        with self._entries_lock:
            entry.users += 1  # released by the timer
        delay = max(at - time.monotonic(), 0.0)
        timer = threading.Timer(delay, self._flush_due, (project, entry, give_up))
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _flush_due(self, project: str, entry: _Entry, give_up: float) -> None:
        self._timers.discard(threading.current_thread())
        if not self._enter():  # retired: its close flushes what is held
            self._done(entry)
            return
        try:
            with entry.lock:
                held = _coalesce.take_due(entry.slot, time.monotonic())
                if held is None:
                    return
                try:
                    self.transport.send(project, held)
                except StaleClaim:
                    pass  # refused for good: the run it belongs to is over
                except PublishError as err:
                    if time.monotonic() >= give_up:
                        logger.error(
                            "a held progress_update of %s could not be published: %s", project, err
                        )
                        return
                    entry.slot.keep(held)
                    entry.slot.flush_scheduled = True
                    at = time.monotonic() + self.config.coalesce_window
                    self._schedule(project, entry, at, give_up)
        finally:
            self._done(entry)
            self._leave()

    def flush(self) -> None:
        """Sends every held `progress_update` now (at a task's end, at exit)."""
        with self._entries_lock:
            entries = list(self._entries.items())
        for project, entry in entries:
            with entry.lock:
                held = _coalesce.take_now(entry.slot, time.monotonic())
                if held is None:
                    continue
                try:
                    self.transport.send(project, held)
                except StaleClaim:
                    pass
                except PublishError as err:
                    logger.error(
                        "a held progress_update of %s could not be published: %s", project, err
                    )

    def next_claim(self, job: str) -> Claim | None:
        if not self._enter():
            return publisher().next_claim(job)
        try:
            return self.transport.next_claim(job)
        finally:
            self._leave()

    def claim_is_current(self, project: str, claim: Claim) -> bool:
        if not self._enter():
            return publisher().claim_is_current(project, claim)
        try:
            return self.transport.claim_is_current(project, claim)
        finally:
            self._leave()

    def run_fields(self, project: str) -> dict[str, str | None]:
        if not self._enter():
            return publisher().run_fields(project)
        try:
            return self.transport.run_fields(project)
        finally:
            self._leave()

    def close(self) -> None:
        """Sends what it holds, then closes the transport (once)."""
        with self._busy:
            if self._closed:
                return
            self._closed = True
        self.flush()
        for timer in list(self._timers):
            timer.cancel()
        self.transport.close()


# The process's publisher, made on first use from the configuration.
_lock = threading.Lock()
_config: Config | None = None
_publisher: Publisher | None = None
_pid = os.getpid()


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET = _Unset.UNSET


def configure(
    *,
    redis_url: str | _Unset = _UNSET,
    hub_url: str | _Unset | None = _UNSET,
    token: str | _Unset | None = _UNSET,
    locale: str | _Unset = _UNSET,
    coalesce_window: float | _Unset = _UNSET,
    retry_for: float | _Unset = _UNSET,
    command_timeout: float | _Unset = _UNSET,
    history_len: int | _Unset = _UNSET,
    history_bytes: int | _Unset = _UNSET,
    active_ttl: int | _Unset = _UNSET,
    retention: int | _Unset = _UNSET,
) -> Config:
    """Sets the given settings (over the environment's, and over earlier calls'); the
    next publish uses them, and returns the `Config` in force. Each is a field of
    `Config`; `hub_url=None` / `token=None` unset them.

    Raises:
        progress_hub.InvalidConfig: a value of the wrong type or range (a `ValueError`;
            `.setting` names it); nothing changed.
        TypeError: an unknown name (also a mypy error).
    """
    global _config, _publisher
    from dataclasses import replace

    given = {
        "redis_url": redis_url,
        "hub_url": hub_url,
        "token": token,
        "locale": locale,
        "coalesce_window": coalesce_window,
        "retry_for": retry_for,
        "command_timeout": command_timeout,
        "history_len": history_len,
        "history_bytes": history_bytes,
        "active_ttl": active_ttl,
        "retention": retention,
    }
    changes: dict[str, Any] = {k: v for k, v in given.items() if v is not _UNSET}
    with _lock:
        old, _publisher = _publisher, None
        # A setting given here wins: its environment variable is not even read.
        _config = replace(_config, **changes) if _config else from_env(overrides=changes)
        config = _config
    if old is not None and _pid == os.getpid():
        old.retire()  # closed now, or after the sends still in flight on it
    return config


def config() -> Config:
    """The configuration in force (the environment's, read once, unless configured)."""
    global _config
    with _lock:
        if _config is None:
            _config = from_env()
        return _config


def publisher() -> Publisher:
    """This process's publisher (a forked child gets its own)."""
    global _publisher, _pid
    current = config()
    with _lock:
        if _publisher is None or _pid != os.getpid():
            _publisher = Publisher(current)
            _pid = os.getpid()
        return _publisher


def _after_fork_in_child() -> None:
    # The parent's held updates are the parent's to send; its locks may be held by a
    # thread that does not exist here.
    global _lock, _publisher, _pid
    _lock = threading.Lock()
    _publisher = None
    _pid = os.getpid()


def flush() -> None:
    """Sends every `progress_update` this process holds, now (if it published at all).
    Raises nothing: a held update that cannot be sent is logged at ERROR."""
    current = _publisher
    if current is not None and _pid == os.getpid():
        current.flush()


def _flush_at_multiprocessing_exit(_: object = None) -> None:
    """A multiprocessing child (fork, forkserver) ends with `os._exit`: atexit never
    runs and the daemon timer dies with it. multiprocessing's own exit function runs its
    finalizers first; this one flushes what the child holds."""
    multiprocessing.util.Finalize(None, flush, exitpriority=10)


class _ForkMark:
    """Kept alive by the module: multiprocessing's after-fork registry is weak."""


_fork_mark = _ForkMark()

os.register_at_fork(after_in_child=_after_fork_in_child)
# A multiprocessing child clears its finalizers after the fork, then runs these hooks
# (before the process's target): the finalizer is registered there.
multiprocessing.util.register_after_fork(_fork_mark, _flush_at_multiprocessing_exit)
atexit.register(flush)
