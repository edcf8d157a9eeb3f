"""Coalescing of `progress_update`, as the hub's publisher does it
(`crates/hub/src/publish/coalescer.rs`): at most one per window per project, the newest wins,
none is lost.

The first update of a window goes out at once; later ones wait in a one-slot buffer
(each replacing the last) and the survivor goes out when the window ends. Any other
event first flushes a waiting update, so clients see the order the worker published
in. The decisions are pure; the sync and asyncio publishers bring the clock, the lock
and the timer.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._event import Event, Prepared
from ._redis import Claim

#: How long a held update whose flush keeps failing is retried (as the hub's).
FLUSH_RETRY_FOR = 120.0
#: Below this many projects' slots, the map is not swept.
SWEEP_FLOOR = 64


@dataclass
class Held:
    """An event as submitted, with what it is published with however many attempts
    that takes: its receipt (a retry never appends twice) and its claim (a held update
    goes out under its own claim, not under the claim of whoever flushes it)."""

    event: Event
    prepared: Prepared
    receipt: str
    claim: Claim | None
    #: Sent again after an attempt whose outcome is not known (`publish.lua` then looks
    #: its receipt up among the project's last publishes; a first attempt cannot have
    #: been done before): set on every attempt after the first and by `Slot.keep`.
    retry: bool = False

    def body(self) -> dict[str, object]:
        """The HTTP publish body: the event, and the tags it gives the run, if any."""
        body: dict[str, object] = dict(self.event.to_json())
        if self.prepared.state.tags is not None:
            body["tags"] = list(self.prepared.state.tags)
        return body


@dataclass
class Slot:
    """One project's coalescing state."""

    #: When (monotonic seconds) the last `progress_update` went out.
    last_sent: float | None = None
    #: The newest update waiting for the window to end.
    pending: Held | None = None
    #: A timer will flush `pending` at the end of the window.
    flush_scheduled: bool = False

    def keep(self, held: Held) -> None:
        """Keeps an update that could not be sent, unless a newer one already waits:
        its next send is a retry (an attempt may have been done)."""
        held.retry = True
        if self.pending is None:
            self.pending = held


@dataclass
class Send:
    """Send now: the waiting update first (if any), then the event."""

    flushed: Held | None
    event: Held


@dataclass
class Hold:
    """Held; a flush is due at `flush_at` (schedule one if `schedule`)."""

    flush_at: float
    schedule: bool


def decide(slot: Slot, held: Held, now: float, window: float) -> Send | Hold:
    # An event giving the run its tags is never held: they must not be superseded.
    # Nor is a unit's done (it is counted), whatever comes after it.
    counted = held.claim is not None and held.claim.done_of is not None
    if held.event.name != "progress_update" or held.prepared.state.tags is not None or counted:
        flushed, slot.pending = slot.pending, None
        if flushed is not None:
            slot.last_sent = now
        return Send(flushed, held)
    window_open = slot.last_sent is not None and now < slot.last_sent + window
    if not window_open and slot.pending is None:
        slot.last_sent = now
        return Send(None, held)
    slot.pending = held
    flush_at = now if slot.last_sent is None else slot.last_sent + window
    schedule = not slot.flush_scheduled
    slot.flush_scheduled = True
    return Hold(flush_at, schedule)


def take_due(slot: Slot, now: float) -> Held | None:
    """At the end of a window: takes the waiting update, if any."""
    slot.flush_scheduled = False
    waiting, slot.pending = slot.pending, None
    if waiting is not None:
        slot.last_sent = now
    return waiting


def take_now(slot: Slot, now: float) -> Held | None:
    """Takes the waiting update out of turn (task end, process exit)."""
    waiting, slot.pending = slot.pending, None
    if waiting is not None:
        slot.last_sent = now
    return waiting


def forgettable(slot: Slot, now: float, window: float) -> bool:
    """Nothing waits and the window is over: forgetting the slot changes nothing (the
    next update goes out at once anyway). The caller checks nobody holds its lock."""
    if slot.pending is not None or slot.flush_scheduled:
        return False
    return slot.last_sent is None or now >= slot.last_sent + window
