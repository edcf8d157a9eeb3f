"""The original sketch's Celery example (`backend/app/tasks/video_generation.py` in
`seed/task-016-websocket-progress.md`), VERBATIM below the marker but for its import
line, which now reads `from progress_hub.aio import ProgressService`. Above the marker:
what the sketch's module takes from elsewhere (its Celery `app`, its `gemini_client`)."""
# mypy: ignore-errors
# ruff: noqa

from celery import Celery


class _Gemini:
    async def generate_script(self, *args, **kwargs):
        return "a script"


app = Celery("seed", broker="memory://")
gemini_client = _Gemini()

# ---- the sketch's code, verbatim from here, but for the import ----
from progress_hub.aio import ProgressService

@app.task(bind=True)
async def generate_script_task(self, project_id: str):
    """
    腳本生成任務
    """
    try:
        # 發布階段變化
        await ProgressService.publish_stage_change(
            project_id=project_id,
            previous_stage="INITIALIZED",
            current_stage="SCRIPT_GENERATING",
            progress=5
        )

        # 發布日誌
        await ProgressService.publish_log(
            project_id=project_id,
            level="INFO",
            message="開始生成腳本..."
        )

        # 實際生成腳本 (調用 Gemini API)
        script = await gemini_client.generate_script(...)

        # 更新進度
        await ProgressService.publish_progress(
            project_id=project_id,
            status="SCRIPT_GENERATING",
            progress=20,
            current_stage="腳本生成完成",
            estimated_remaining=600
        )

        return script

    except Exception as e:
        # 發布錯誤
        await ProgressService.publish_error(
            project_id=project_id,
            error_code="GEMINI_API_ERROR",
            error_message=str(e),
            stage="SCRIPT_GENERATING",
            retry_count=self.request.retries,
            max_retries=self.max_retries
        )
        raise
