"""`generate_video` as Celery tasks: one task per stage, chained. The code is the
original sketch's, synchronous (a Celery task body cannot be `async def`: Celery calls
it and never awaits the coroutine), with `ProgressService` from `progress_hub`."""

from __future__ import annotations

import os
import random
from typing import Any

from celery import chain
from celery.result import AsyncResult

from progress_hub import ProgressService
from progress_hub.celery import ProgressTask

from . import providers
from .app import app

MAX_RETRIES = 3


def _options(options: dict[str, Any] | None) -> dict[str, Any]:
    opts = dict(options or {})
    opts.setdefault("mock_delay", float(os.environ.get("MOCK_DELAY", "1.0")))
    opts.setdefault("retry_base", float(os.environ.get("RETRY_BASE", "1.0")))
    opts.setdefault("inject_failures", {})
    opts.setdefault("topic", "科技趨勢展望")
    return opts


def _step(task: ProgressTask, stage: str, opts: dict[str, Any]) -> None:
    """One provider call; a failure is retried by Celery with exponential backoff."""
    try:
        providers.call(stage, task.request.retries, opts["inject_failures"], opts["mock_delay"])
    except providers.ProviderError as exc:
        backoff = opts["retry_base"] * (2**task.request.retries)
        raise task.retry(exc=exc, countdown=backoff * (0.5 + random.random() / 2)) from exc


@app.task(bind=True, base=ProgressTask, max_retries=MAX_RETRIES)
def generate_script_task(
    self: ProgressTask, project_id: str, options: dict[str, Any] | None = None
) -> None:
    opts = _options(options)
    ProgressService.publish_stage_change(
        project_id=project_id,
        previous_stage="INITIALIZED",
        current_stage="SCRIPT_GENERATING",
        progress=5,
    )
    ProgressService.publish_log(project_id=project_id, level="INFO", message="開始生成腳本...")
    _step(self, "SCRIPT_GENERATING", opts)
    ProgressService.publish_progress(
        project_id=project_id,
        status="SCRIPT_GENERATING",
        progress=20,
        current_stage="腳本生成完成",
        estimated_remaining=600,
    )


@app.task(bind=True, base=ProgressTask, max_retries=MAX_RETRIES)
def generate_assets_task(
    self: ProgressTask, project_id: str, options: dict[str, Any] | None = None
) -> None:
    opts = _options(options)
    ProgressService.publish_stage_change(project_id, "SCRIPT_GENERATING", "ASSETS_GENERATING", 20)
    ProgressService.publish_log(project_id, "INFO", "正在生成語音...")
    _step(self, "ASSETS_GENERATING", opts)
    for i in range(1, 16):
        ProgressService.publish_log(
            project_id, "INFO", f"[{i}/15] 正在生成圖片: 段落 {i} - {opts['topic']}"
        )
        providers.call("ASSETS_GENERATING", 1 << 30, {}, opts["mock_delay"])
        ProgressService.publish_progress(
            project_id, "ASSETS_GENERATING", 20 + i * 2, f"圖片生成中 ({i}/15)", 540 - i * 10
        )
    ProgressService.publish_log(project_id, "INFO", "正在生成虛擬主播...")
    providers.call("ASSETS_GENERATING", 1 << 30, {}, opts["mock_delay"])
    ProgressService.publish_progress(project_id, "ASSETS_GENERATING", 60, "素材生成完成", 300)


@app.task(bind=True, base=ProgressTask, max_retries=MAX_RETRIES)
def render_video_task(
    self: ProgressTask, project_id: str, options: dict[str, Any] | None = None
) -> None:
    opts = _options(options)
    ProgressService.publish_stage_change(project_id, "ASSETS_GENERATING", "RENDERING", 60)
    _step(self, "RENDERING", opts)
    for part in range(1, 5):
        providers.call("RENDERING", 1 << 30, {}, opts["mock_delay"])
        ProgressService.publish_progress(
            project_id, "RENDERING", 60 + part * 6, f"渲染中 ({part}/4)", 200 - part * 40
        )


@app.task(bind=True, base=ProgressTask, max_retries=MAX_RETRIES)
def generate_thumbnail_task(
    self: ProgressTask, project_id: str, options: dict[str, Any] | None = None
) -> None:
    opts = _options(options)
    ProgressService.publish_stage_change(project_id, "RENDERING", "THUMBNAIL_GENERATING", 84)
    _step(self, "THUMBNAIL_GENERATING", opts)
    ProgressService.publish_progress(project_id, "THUMBNAIL_GENERATING", 90, "封面生成完成", 30)


@app.task(bind=True, base=ProgressTask, max_retries=MAX_RETRIES)
def upload_to_youtube_task(
    self: ProgressTask, project_id: str, options: dict[str, Any] | None = None
) -> None:
    opts = _options(options)
    ProgressService.publish_stage_change(project_id, "THUMBNAIL_GENERATING", "UPLOADING", 90)
    ProgressService.publish_log(project_id, "INFO", "正在上傳到 YouTube...")
    _step(self, "UPLOADING", opts)
    ProgressService.publish_progress(project_id, "UPLOADING", 99, "上傳完成", 0)
    ProgressService.publish_complete(
        project_id, "COMPLETED", f"https://youtube.com/watch?v={project_id}"
    )


STAGE_TASKS = (
    generate_script_task,
    generate_assets_task,
    render_video_task,
    generate_thumbnail_task,
    upload_to_youtube_task,
)


def start_generation(project_id: str, **options: Any) -> AsyncResult:
    """Queues the five stages as one chain: one generation job (the chain's root id)."""
    return chain(*(task.si(project_id, options) for task in STAGE_TASKS)).apply_async()
