"""The example pipeline run by a real Celery worker, watched over WebSocket through a
real hub."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import Hub, RedisServer, Watcher, Workers, new_project, seq, wait_for

STAGES = [
    "SCRIPT_GENERATING",
    "ASSETS_GENERATING",
    "RENDERING",
    "THUMBNAIL_GENERATING",
    "UPLOADING",
]
#: The example's log lines of one clean run (see examples/celery_app/tasks.py).
LOGS_PER_RUN = 1 + 1 + 15 + 1 + 1


def start(workers: Workers, project: str, **options: Any) -> None:
    from celery import chain
    from celery_app.tasks import STAGE_TASKS

    options.setdefault("retry_base", 0.05)
    chain(*(t.si(project, options).set(queue=workers.queue) for t in STAGE_TASKS)).apply_async()


def assert_every_event_once_in_order(
    frames: list[dict[str, Any]], history: list[dict[str, Any]]
) -> None:
    ids = [seq(f["id"]) for f in frames]
    assert len({epoch for epoch, _ in ids}) == 1
    assert [n for _, n in ids] == list(range(ids[0][1], ids[0][1] + len(ids))), (
        "ids increase by one"
    )
    assert frames == [delivered(f) for f in history], "the client saw exactly the history"


def delivered(stored: dict[str, Any]) -> dict[str, Any]:
    """What the hub sends for a history entry: an error frame of the publish path is
    stored without its `error` compatibility object (it would repeat `data`) and gets
    it on the way to clients (docs/PROTOCOL.md)."""
    if stored["event"] != "error" or "error" in stored:
        return stored
    d = stored["data"]
    keys = ("message", "stage", "is_retryable", "details", "solutions", "trace_id", "timestamp")
    return {**stored, "error": {"code": d["error_code"], **{k: d[k] for k in keys}}}


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_celery_run_watched_over_websocket(
    pool: str,
    hub: Hub,
    redis_server: RedisServer,
    workers: Workers,
    watch: Callable[[str], Watcher],
) -> None:
    project = new_project()
    workers.start(pool)
    first = watch(hub.ws_url(project))
    start(workers, project, mock_delay=0.05)
    # A second client joins mid-run, resuming after the first stage's events.
    mid = wait_for(
        "the assets stage",
        lambda: next(
            (f for f in first.events() if f["data"].get("current_stage") == "ASSETS_GENERATING"),
            None,
        ),
    )
    late = watch(hub.ws_url(project, last_event_id=mid["id"]))
    frames = first.wait_complete()
    history = redis_server.history(project)
    assert_every_event_once_in_order(frames, history)
    assert frames[0]["data"]["previous_stage"] == "INITIALIZED"
    assert [f["data"]["current_stage"] for f in frames if f["event"] == "stage_change"] == STAGES
    assert sum(f["event"] == "log" for f in frames) == LOGS_PER_RUN
    assert [f["data"]["status"] for f in frames if f["event"] == "complete"] == ["COMPLETED"]
    progress = [f["data"]["progress"] for f in frames if "progress" in f["data"]]
    assert progress == sorted(progress)

    rest = late.wait_complete()
    assert late.all()[0]["event"] == "connected" and late.all()[0]["data"]["resumed"] is True
    after = frames[frames.index(mid) + 1 :]
    assert rest == after, "the late client got exactly the rest"

    wait_for("the worker to finish the chain", lambda: workers.text().count(" succeeded in ") == 5)
    assert " ignored" not in workers.text()

    state = httpx.get(f"{hub.base}/api/v1/projects/{project}").json()
    assert state["status"] == "COMPLETED"
    assert state["progress"] == 100
    assert state["youtube_url"] == f"https://youtube.com/watch?v={project}"
    assert state["last_event_id"] == frames[-1]["id"]


def test_injected_failures_are_reported_then_the_job_completes(
    hub: Hub, redis_server: RedisServer, workers: Workers, watch: Callable[[str], Watcher]
) -> None:
    project, failing = new_project(), new_project()
    workers.start()
    ok, bad = watch(hub.ws_url(project)), watch(hub.ws_url(failing))
    start(workers, project, mock_delay=0.01, inject_failures={"RENDERING": 2})
    start(workers, failing, mock_delay=0.01, inject_failures={"THUMBNAIL_GENERATING": 9})

    frames = ok.wait_complete()
    errors = [f["data"] for f in frames if f["event"] == "error"]
    assert [(e["stage"], e["retry_count"], e["max_retries"]) for e in errors] == [
        ("RENDERING", 0, 3),
        ("RENDERING", 1, 3),
    ]
    assert errors[0]["error_code"] == "RENDER_ERROR" and errors[0]["is_retryable"] is True
    assert errors[0]["solutions"] and len(errors[0]["trace_id"]) == 16
    assert [f["data"]["status"] for f in frames if f["event"] == "complete"] == ["COMPLETED"]
    assert_every_event_once_in_order(frames, redis_server.history(project))

    frames = bad.wait_complete()
    errors = [f["data"] for f in frames if f["event"] == "error"]
    assert [(e["stage"], e["retry_count"]) for e in errors] == [
        ("THUMBNAIL_GENERATING", n) for n in range(4)
    ]
    assert [f["data"]["status"] for f in frames if f["event"] == "complete"] == ["FAILED"]
    assert "UPLOADING" not in [f["data"].get("current_stage") for f in frames]
    assert redis_server.state(failing)["status"] == "FAILED"


@pytest.mark.parametrize("killed", ["the whole worker", "its pool process"])
def test_a_worker_killed_mid_task_is_redelivered_and_completes_once(
    killed: str,
    hub: Hub,
    redis_server: RedisServer,
    workers: Workers,
    watch: Callable[[str], Watcher],
) -> None:
    project = new_project()
    whole = killed == "the whole worker"
    # The whole worker: its task comes back after the visibility timeout, to the next
    # worker. Its pool process: the worker requeues the task at once (acks_late with
    # reject_on_worker_lost) and a new pool process runs it; that case keeps the default
    # timeout, or a loaded machine's slow rerun would be redelivered a third time by it.
    doomed = workers.start("solo" if whole else "prefork", visibility_timeout=2 if whole else 3600)
    victim = doomed.pid if whole else workers.pool_process(doomed)
    watcher = watch(hub.ws_url(project))
    start(workers, project, mock_delay=0.1)
    wait_for(
        "the assets stage to run",
        lambda: redis_server.state(project).get("status") == "ASSETS_GENERATING",
    )
    fence_before = int(redis_server.state(project)["fence_token"])
    os.kill(victim, signal.SIGKILL)
    if whole:
        doomed.wait()
        workers.start(visibility_timeout=2)
    frames = watcher.wait_complete(timeout=90)
    assert_every_event_once_in_order(frames, redis_server.history(project))
    assert [f["data"]["status"] for f in frames if f["event"] == "complete"] == ["COMPLETED"]
    stages = [f["data"]["current_stage"] for f in frames if f["event"] == "stage_change"]
    # The redelivered task says it took the job over (previous stage = current stage,
    # as the hub's own worker marks it), then runs its body again.
    again = [
        f["data"]["current_stage"]
        for f in frames
        if f["event"] == "stage_change"
        and f["data"]["previous_stage"] == f["data"]["current_stage"]
    ]
    assert again == ["ASSETS_GENERATING"], "marked taken over"
    assert stages.count("ASSETS_GENERATING") == 3, "the assets task ran again"
    assert stages[-3:] == STAGES[-3:]
    state = redis_server.state(project)
    assert int(state["fence_token"]) > fence_before, "the redelivered run holds a newer claim"
    assert state["fence_ended"] == state["fence_holder"]


def test_redis_paused_mid_task_loses_and_doubles_nothing(
    hub: Hub, redis_server: RedisServer, workers: Workers, watch: Callable[[str], Watcher]
) -> None:
    project = new_project()
    # A publish times out (0.5 s) during the pause and is retried with its receipt.
    workers.start(HUB_PUBLISH_TIMEOUT="0.5")
    watcher = watch(hub.ws_url(project))
    start(workers, project, mock_delay=0.05)
    wait_for(
        "the assets stage to run",
        lambda: redis_server.state(project).get("status") == "ASSETS_GENERATING",
    )
    redis_server.pause()
    try:
        time.sleep(2)  # the outage itself
    finally:
        redis_server.resume()
    frames = watcher.wait_complete(timeout=90)
    history = redis_server.history(project)
    assert_every_event_once_in_order(frames, history)
    assert [seq(f["id"])[1] for f in history] == list(range(1, len(history) + 1))
    logs = [f["data"]["message"] for f in history if f["event"] == "log"]
    assert len(logs) == LOGS_PER_RUN and len(set(logs)) == LOGS_PER_RUN, "no log lost or doubled"
    assert [f["data"]["current_stage"] for f in history if f["event"] == "stage_change"] == STAGES
    assert sum(f["event"] == "complete" for f in history) == 1
    assert "Redis unavailable; retrying" in workers.text(), "the outage was ridden out by retries"


def test_a_stalled_worker_that_lost_its_task_cannot_write_into_the_live_run(
    hub: Hub, redis_server: RedisServer, workers: Workers, watch: Callable[[str], Watcher]
) -> None:
    project = new_project()
    stalled = workers.start(visibility_timeout=2)
    watcher = watch(hub.ws_url(project))
    start(workers, project, mock_delay=0.1)
    wait_for(
        "the assets stage to run",
        lambda: redis_server.state(project).get("status") == "ASSETS_GENERATING",
    )
    os.kill(stalled.pid, signal.SIGSTOP)  # stalls mid-task (a long GC pause, a frozen VM)
    try:
        workers.start(visibility_timeout=2)  # takes the task over after its visibility timeout
        wait_for(
            "the live run to render",
            lambda: redis_server.state(project).get("status") == "RENDERING",
        )
    finally:
        os.kill(stalled.pid, signal.SIGCONT)  # wakes up inside its assets step
    frames = watcher.wait_complete(timeout=90)
    wait_for("the stalled run to notice", lambda: "was superseded" in workers.outputs[0].text())
    history = redis_server.history(project)
    assert_every_event_once_in_order(frames, history)
    assert [f["event"] for f in history].count("complete") == 1
    assert history[-1]["event"] == "complete", "nothing after the job's complete"
    stages = [i for i, f in enumerate(history) if f["event"] == "stage_change"]
    takeover = [i for i in stages if history[i]["data"]["current_stage"] == "ASSETS_GENERATING"][-1]
    live_logs = [f["data"]["message"] for f in history[takeover:] if f["event"] == "log"]
    assert live_logs == [
        "正在生成語音...",
        *(f"[{i}/15] 正在生成圖片: 段落 {i} - 科技趨勢展望" for i in range(1, 16)),
        "正在生成虛擬主播...",
        "正在上傳到 YouTube...",
    ], "the stalled run wrote nothing into the live one"
