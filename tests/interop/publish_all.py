"""Calls every publish_* method of the original ProgressService once, in order.

Usage: REDIS_URL=redis://127.0.0.1:PORT/0 python3 publish_all.py PROJECT_ID
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from app.services.progress_service import ProgressService  # noqa: E402


async def main(project_id: str) -> None:
    await ProgressService.publish_stage_change(project_id, "SCRIPT_GENERATING", "ASSETS_GENERATING", 25)
    await ProgressService.publish_progress(project_id, "ASSETS_GENERATING", 30, "正在生成圖片...", 600)
    await ProgressService.publish_log(project_id, "INFO", "[1/15] 正在生成圖片: 段落 1 - 科技趨勢展望")
    await ProgressService.publish_error(project_id, "STABILITY_AI_ERROR", "Stability AI API 配額已用盡", "ASSETS_GENERATING", 2, 3)
    await ProgressService.publish_complete(project_id, "COMPLETED", "https://youtube.com/watch?v=interop")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
