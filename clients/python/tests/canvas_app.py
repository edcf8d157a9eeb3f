"""A Celery app whose tasks fan out under one job (issue 25 §1): a script step, asset
units run as a `group` or a `chord`'s header, and a render step, every task on
`ProgressTask`. Run by `test_canvas.py`'s real prefork workers (`-A canvas_app`); the
result backend (a chord needs one) is the broker's Redis."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from progress_hub import ProgressService
from progress_hub.celery import ProgressTask

_BROKER = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379")
app = Celery("canvas_app", broker=_BROKER, backend=_BROKER)
app.conf.update(
    broker_transport_options={
        "visibility_timeout": float(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600")),
        "unacked_restore_interval": int(os.environ.get("CELERY_UNACKED_RESTORE_INTERVAL", "10")),
        "unacked_restore_throttle": int(os.environ.get("CELERY_UNACKED_RESTORE_THROTTLE", "10")),
    },
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    broker_connection_retry_on_startup=True,
)


class AssetError(Exception):
    """An image provider's failure: retryable, by the catalog."""

    error_code = "STABILITY_AI_ERROR"


#: The progress the assets stage spans: k of N units done is 30 + 40 * k / N.
ASSETS_SPAN = (30, 70)


@app.task(bind=True, base=ProgressTask)  # type: ignore[untyped-decorator]
def script(self: ProgressTask, project_id: str, opts: dict[str, Any]) -> str:
    ProgressService.publish_stage_change(project_id, "INITIALIZED", "SCRIPT_GENERATING", 5)
    time.sleep(opts.get("delay", 0.05))
    ProgressService.publish_progress(project_id, "SCRIPT_GENERATING", 20, "script written")
    ProgressService.publish_stage_change(
        project_id, "SCRIPT_GENERATING", "ASSETS_GENERATING", ASSETS_SPAN[0]
    )
    return "script"


@app.task(bind=True, base=ProgressTask, max_retries=3)  # type: ignore[untyped-decorator]
def asset(self: ProgressTask, project_id: str, i: int, n: int, opts: dict[str, Any]) -> int:
    """Unit `i` of `n`: fails its first `fail[i]` attempts (retried), sleeps `slow[i]`
    seconds (polling for a cancel), then counts itself done."""
    fails = int(opts.get("fail", {}).get(str(i), 0))
    if self.request.retries < fails:
        raise self.retry(exc=AssetError(f"asset {i} failed"), countdown=0.05)
    ProgressService.publish_log(project_id, "INFO", f"asset {i} started in {os.getpid()}")
    until = time.monotonic() + float(opts.get("slow", {}).get(str(i), opts.get("delay", 0.05)))
    while time.monotonic() < until:
        if self.is_cancelled():
            return -1
        time.sleep(0.05)
    self.publish_unit_done("ASSETS_GENERATING", n, ASSETS_SPAN, f"asset {i} done")
    return i


@app.task(bind=True, base=ProgressTask)  # type: ignore[untyped-decorator]
def render(self: ProgressTask, results: list[int], project_id: str, opts: dict[str, Any]) -> str:
    """The chord's body; ends the canvas without `publish_complete` unless told to."""
    ProgressService.publish_stage_change(project_id, "ASSETS_GENERATING", "RENDERING", 75)
    ProgressService.publish_log(project_id, "INFO", f"rendering {sorted(results)}")
    if opts.get("complete"):
        ProgressService.publish_complete(project_id, "COMPLETED", "https://youtube.com/watch?v=x")
    return "rendered"


@app.task(bind=True, base=ProgressTask)  # type: ignore[untyped-decorator]
def upload(self: ProgressTask, project_id: str, opts: dict[str, Any]) -> str:
    """A chain's last step, completing the job itself."""
    ProgressService.publish_stage_change(project_id, "ASSETS_GENERATING", "UPLOADING", 90)
    ProgressService.publish_complete(project_id, "COMPLETED", "https://youtube.com/watch?v=x")
    return "uploaded"
