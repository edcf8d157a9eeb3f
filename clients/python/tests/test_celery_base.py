"""The task base in-process (`Task.apply`): what a failing run reports, and when a run
continues its chain."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Ignore, Reject
from conftest import RedisServer, new_project

from progress_hub import ProgressService, _run, _sync
from progress_hub.celery import ProgressTask

app = Celery("base-tests", broker="memory://")


@app.task(bind=True, base=ProgressTask, max_retries=2)  # type: ignore[untyped-decorator]
def crashing_task(self: ProgressTask, project_id: str, message: str) -> None:
    ProgressService.publish_stage_change(project_id, "INITIALIZED", "RENDERING", 60)
    raise RuntimeError(message)


def run(project: str, message: str) -> Any:
    return crashing_task.apply(args=[project, message])


def test_a_crash_reports_an_error_then_failed(redis_server: RedisServer) -> None:
    project = new_project()
    result = run(project, "x" * 10_000)
    assert isinstance(result.result, RuntimeError)
    frames = redis_server.history(project)
    assert [f["event"] for f in frames] == ["stage_change", "error", "complete"]
    error = frames[1]["data"]
    assert error["error_code"] == "INTERNAL_ERROR" and error["stage"] == "RENDERING"
    assert (error["retry_count"], error["max_retries"]) == (0, 2)
    assert len(error["message"]) == 8 * 1024, "cut to the hub's limit, not dropped"
    assert frames[2]["data"]["status"] == "FAILED"
    state = redis_server.state(project)
    assert state["fence_ended"] == result.id, "the job is over: a late run of it is refused"


@app.task(bind=True, base=ProgressTask, max_retries=2)  # type: ignore[untyped-decorator]
def predicate_task(self: ProgressTask, project_id: str, kind: str) -> None:
    ProgressService.publish_stage_change(project_id, "INITIALIZED", "SCRIPT_GENERATING", 5)
    if kind == "reject":
        raise Reject("worker shutting down, put it back", requeue=True)
    raise Ignore()


@pytest.mark.parametrize("kind", ["reject", "ignore"])
def test_ignore_and_reject_are_not_failures(redis_server: RedisServer, kind: str) -> None:
    project = new_project()
    predicate_task.apply(args=[project, kind])
    assert [f["event"] for f in redis_server.history(project)] == ["stage_change"]
    assert redis_server.state(project)["status"] == "SCRIPT_GENERATING"


@app.task(bind=True, base=ProgressTask)  # type: ignore[untyped-decorator]
def outrun_task(self: ProgressTask, project_id: str, ending: str) -> str:
    """Publishes under its claim; then, before it returns, what `ending` says happens."""
    ProgressService.publish_stage_change(project_id, "INITIALIZED", "RENDERING", 60)
    if ending == "a later job takes the project":
        later = _sync.publisher().next_claim(f"later-{project_id}")
        token = _run.current_run.set(_run.Run(later))
        try:
            ProgressService.publish_stage_change(project_id, "INITIALIZED", "SCRIPT_GENERATING", 5)
        finally:
            _run.current_run.reset(token)
    elif ending == "it completes the job itself":
        ProgressService.publish_complete(project_id, "COMPLETED", "https://youtube.com/watch?v=1")
    return "continued"


@pytest.mark.parametrize(
    ("ending", "continues"),
    [("a later job takes the project", False), ("it completes the job itself", True)],
)
def test_a_run_continues_its_chain_only_while_its_claim_holds(
    redis_server: RedisServer, ending: str, continues: bool
) -> None:
    result = outrun_task.apply(args=[new_project(), ending])
    assert (result.state == "SUCCESS" and result.result == "continued") is continues
    assert (result.state == "IGNORED") is not continues
