"""`ProgressService`, written once: this asyncio source (`progress_hub.aio`), and
`_service_sync.py` generated from it by `clients/python/unasync.py` (`progress_hub`).
The seed's five static methods, same names, parameters and defaults, publishing
through the hub's publish path. Edit this file, then run `python unasync.py`.

Nothing a publish carries is logged above DEBUG: a library must not print its callers'
payloads (the seed's echo of every event is kept, at DEBUG, for whoever asks for it).
"""

from __future__ import annotations

import logging

from . import _docs, _event, _run
from . import aio as lifecycle

logger = logging.getLogger("progress_hub")


async def _publish(project_id: str, event: _event.Event, stage: str | None) -> str | None:
    project = _event.check_project_id(project_id)
    sent = await lifecycle.publisher().publish(project, event, tags=_run.take_tags())
    _run.note(event.name, stage)
    return sent


@_docs.fill
class ProgressService:
    """Publishes a project's progress (asyncio: each method is a coroutine).

    Each method returns the event's id (``"<epoch>:<seq>"``), or ``None`` for a
    ``progress_update`` held by coalescing (it goes out at the end of its 500 ms
    window, or sooner when another event follows).

    Each method's docstring lists the values it allows and the exceptions it raises.
    """

    @staticmethod
    async def publish_progress(
        project_id: str,
        status: str,
        progress: int,
        current_stage: str,
        estimated_remaining: int | None = None,
    ) -> str | None:
        """Publishes a ``progress_update`` (coalesced: at most one per project per window).

        Args:
            project_id: 1 to 64 of ``A-Z a-z 0-9 _ -``.
            status: the stage the job is in: one of {stages}.
            progress: percent, 0 to 100 (the hub never lets it go backwards in a run).
            current_stage: free text shown to watchers, at most {max_stage_text} characters.
            estimated_remaining: seconds left, ``>= 0``, or ``None`` (unknown).

        {raises}
        """
        event = _event.progress_update(status, progress, current_stage, estimated_remaining)
        sent = await _publish(project_id, event, status)
        logger.debug("[Project %s] Progress: %s%% - %s", project_id, progress, current_stage)
        return sent

    @staticmethod
    async def publish_stage_change(
        project_id: str, previous_stage: str, current_stage: str, progress: int
    ) -> str | None:
        """Publishes a ``stage_change`` (the state's status becomes ``current_stage``).

        Args:
            project_id: 1 to 64 of ``A-Z a-z 0-9 _ -``.
            previous_stage: one of {previous_stages}.
            current_stage: one of {stages}.
            progress: percent, 0 to 100.

        {raises}
        """
        event = _event.stage_change(previous_stage, current_stage, progress)
        sent = await _publish(project_id, event, current_stage)
        logger.debug("[Project %s] Stage: %s → %s", project_id, previous_stage, current_stage)
        return sent

    @staticmethod
    async def publish_log(project_id: str, level: str, message: str) -> str | None:
        """Publishes a ``log`` line to the project's watchers (not to Python's logging).

        Args:
            project_id: 1 to 64 of ``A-Z a-z 0-9 _ -``.
            level: one of {levels}.
            message: at most {max_message} characters.

        {raises}
        """
        event = _event.log(level, message)
        sent = await _publish(project_id, event, None)
        logger.debug("[Project %s] %s: %s", project_id, level, message)
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
        """Publishes an ``error``: the catalog adds ``is_retryable`` and the solutions
        (in the configured locale). An error does not end the job: ``publish_complete``
        does.

        Args:
            project_id: 1 to 64 of ``A-Z a-z 0-9 _ -``.
            error_code: one of the catalog's codes: {error_codes}.
            error_message: at most {max_message} characters.
            stage: the stage that failed: one of {stages}.
            retry_count: attempts so far, 0 to ``max_retries + 1``.
            max_retries: attempts allowed, ``>= 0``.

        {raises}
        """
        locale = lifecycle.config().locale
        event = _event.error(error_code, error_message, stage, retry_count, max_retries, locale)
        sent = await _publish(project_id, event, stage)
        logger.debug("[Project %s] Error: %s - %s", project_id, error_code, error_message)
        return sent

    @staticmethod
    async def publish_complete(
        project_id: str, status: str, youtube_url: str | None = None
    ) -> str | None:
        """Publishes ``complete``: the job's end. Watchers stop on it, and a job ends
        only with it (``COMPLETED`` also sets progress to 100). Under a Celery
        ``ProgressTask``, later events of the same job are refused.

        Args:
            project_id: 1 to 64 of ``A-Z a-z 0-9 _ -``.
            status: one of {complete_statuses}.
            youtube_url: an ``https://`` URL of at most {max_url} characters, or ``None``.

        {raises}
        """
        event = _event.complete(status, youtube_url)
        sent = await _publish(project_id, event, None)
        logger.debug("[Project %s] Generation complete: %s", project_id, status)
        return sent
