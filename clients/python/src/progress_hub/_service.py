"""`ProgressService`, synchronous: the seed's five static methods, same names,
parameters and defaults, publishing through the hub's publish path."""

from __future__ import annotations

import logging

from . import _event, _run, _sync

logger = logging.getLogger("progress_hub")


def _publish(project_id: str, event: _event.Event, stage: str | None) -> str | None:
    project = _event.check_project_id(project_id)
    sent = _sync.publisher().publish(project, event)
    _run.note(event.name, stage)
    return sent


class ProgressService:
    """Publishes a project's progress. Each method returns the event's id
    (`"<epoch>:<seq>"`), or `None` for a `progress_update` held by coalescing (it goes
    out at the end of its 500 ms window, or sooner when another event follows).
    Invalid arguments raise `ValueError` naming the field; a publish that cannot
    reach Redis within the retry budget raises `progress_hub.PublishUnavailable`."""

    @staticmethod
    def publish_progress(
        project_id: str,
        status: str,
        progress: int,
        current_stage: str,
        estimated_remaining: int | None = None,
    ) -> str | None:
        event = _event.progress_update(status, progress, current_stage, estimated_remaining)
        sent = _publish(project_id, event, status)
        logger.info("[Project %s] Progress: %s%% - %s", project_id, progress, current_stage)
        return sent

    @staticmethod
    def publish_stage_change(
        project_id: str, previous_stage: str, current_stage: str, progress: int
    ) -> str | None:
        event = _event.stage_change(previous_stage, current_stage, progress)
        sent = _publish(project_id, event, current_stage)
        logger.info("[Project %s] Stage: %s → %s", project_id, previous_stage, current_stage)
        return sent

    @staticmethod
    def publish_log(project_id: str, level: str, message: str) -> str | None:
        event = _event.log(level, message)
        sent = _publish(project_id, event, None)
        logger.log(getattr(logging, level), "[Project %s] %s", project_id, message)
        return sent

    @staticmethod
    def publish_error(
        project_id: str,
        error_code: str,
        error_message: str,
        stage: str,
        retry_count: int = 0,
        max_retries: int = 3,
    ) -> str | None:
        locale = _sync.config().locale
        event = _event.error(error_code, error_message, stage, retry_count, max_retries, locale)
        sent = _publish(project_id, event, stage)
        logger.error("[Project %s] Error: %s - %s", project_id, error_code, error_message)
        return sent

    @staticmethod
    def publish_complete(
        project_id: str, status: str, youtube_url: str | None = None
    ) -> str | None:
        event = _event.complete(status, youtube_url)
        sent = _publish(project_id, event, None)
        logger.info("[Project %s] Generation complete: %s", project_id, status)
        return sent
