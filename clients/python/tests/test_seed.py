"""The sketch's own Celery example with only its import changed: its body publishes
through the hub's path (its first call, previous_stage INITIALIZED, is accepted); and,
as docs/PYTHON.md says, Celery does not run an `async def` task's body."""

from __future__ import annotations

import asyncio
import inspect
import warnings

from conftest import RedisServer, new_project
from seed.video_generation import generate_script_task


def test_the_seeds_task_body_publishes_through_the_hubs_path(redis_server: RedisServer) -> None:
    project = new_project()
    assert asyncio.run(generate_script_task.run(project)) == "a script"
    frames = redis_server.history(project)
    assert [f["event"] for f in frames] == ["stage_change", "log", "progress_update"]
    assert frames[0]["data"]["previous_stage"] == "INITIALIZED"
    assert [f["id"].split(":")[1] for f in frames] == ["1", "2", "3"]
    assert redis_server.state(project)["progress"] == "20"


def test_celery_does_not_run_an_async_task_body(redis_server: RedisServer) -> None:
    project = new_project()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "coroutine ... was never awaited"
        result = generate_script_task.apply(args=[project])
        assert inspect.iscoroutine(result.result), "Celery returned the coroutine, unawaited"
        result.result.close()
    assert redis_server.history(project) == [], "nothing was published"
