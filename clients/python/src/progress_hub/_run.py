"""The run an event belongs to: set by the Celery task base (`progress_hub.celery`)
around a task's body, read by every publish made inside it (the same thread or
coroutine: a `ContextVar`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from ._redis import Claim


@dataclass
class Run:
    #: The claim this run's events are fenced by.
    claim: Claim | None
    #: The stage the run is in (the `stage` of an error reported for it).
    stage: str = "SCRIPT_GENERATING"
    #: The task body published an `error` itself during this attempt.
    error_published: bool = False
    #: The run published its job's `complete` (its claim is then spent, not superseded).
    completed: bool = False
    #: The run counted its unit done (`ProgressTask.publish_unit_done`).
    unit_done: bool = False
    #: The run published a stage (`stage` is then the one it is in, not a default).
    staged: bool = False
    #: The tags its first publish gives the project's run (then `None`).
    tags: tuple[str, ...] | None = None


current_run: ContextVar[Run | None] = ContextVar("progress_hub_run", default=None)


def claim() -> Claim | None:
    run = current_run.get()
    return None if run is None else run.claim


@contextmanager
def tagged(tags: Sequence[str]) -> Iterator[None]:
    """Gives the project's run `tags`: the first publish inside the block carries them
    (``with progress_hub.tagged(["user:7"]): ProgressService.publish_progress(...)``),
    in a `ProgressTask` or not, sync or asyncio. Bad tags raise `InvalidEvent`."""
    from ._event import check_tags

    checked = check_tags(tags)
    run = current_run.get()
    if run is not None:
        before, run.tags = run.tags, checked
        try:
            yield
        finally:
            run.tags = before if run.tags is not None else None
        return
    token = current_run.set(Run(None, tags=checked))
    try:
        yield
    finally:
        current_run.reset(token)


def take_tags() -> tuple[str, ...] | None:
    """The tags the run's next publish carries: the run's, once (its first publish)."""
    run = current_run.get()
    if run is None:
        return None
    tags, run.tags = run.tags, None
    return tags


def note(event_name: str, stage: str | None) -> None:
    """Keeps the run's bookkeeping up to date with an event it published."""
    run = current_run.get()
    if run is None:
        return
    if stage is not None:
        run.stage, run.staged = stage, True
    if event_name == "error":
        run.error_published = True
    if event_name == "complete":
        run.completed = True
