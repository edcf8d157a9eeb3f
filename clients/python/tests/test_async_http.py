"""The asyncio flavour, and HTTP mode against the hub."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from conftest import HERE, Hub, RedisServer, new_project

import progress_hub
from progress_hub import ProgressService, _event, _sync
from progress_hub import aio as progress_aio


def test_an_asyncio_program_publishes_and_nothing_held_is_lost_at_exit(
    redis_server: RedisServer,
) -> None:
    project = new_project()
    out = subprocess.run(
        [sys.executable, str(HERE / "async_program.py"), redis_server.url, project],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    ids = json.loads(out.stdout)
    assert ids[0].endswith(":1") and ids[1].endswith(":2")
    assert ids[2] is None and ids[3] is None, "held by coalescing"
    assert ids[4].endswith(":4"), "the log flushed the newest held update (3) first"
    history = redis_server.history(project)
    assert [(f["event"], f["data"].get("progress")) for f in history] == [
        ("stage_change", 5),
        ("progress_update", 10),
        ("progress_update", 12),
        ("log", None),
        ("progress_update", 13) if ids[5] else ("progress_update", 14),
        *([("progress_update", 14)] if ids[5] else []),
    ]
    assert history[-1]["data"]["progress"] == 14, "the held update went out at exit"


def test_asyncio_sends_a_held_update_at_the_end_of_its_window(redis_server: RedisServer) -> None:
    project = new_project()

    async def run() -> list[int]:
        assert (
            await progress_aio.ProgressService.publish_progress(project, "RENDERING", 40, "a")
            is not None
        )
        assert (
            await progress_aio.ProgressService.publish_progress(project, "RENDERING", 45, "b")
            is None
        )
        deadline = time.monotonic() + 10
        while len(redis_server.history(project)) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return [f["data"]["progress"] for f in redis_server.history(project)]

    assert asyncio.run(run()) == [40, 45]


def test_http_mode_publishes_through_the_hub(hub: Hub, redis_server: RedisServer) -> None:
    project = new_project()
    progress_hub.configure(hub_url=hub.base)
    try:
        first = ProgressService.publish_stage_change(project, "INITIALIZED", "SCRIPT_GENERATING", 5)
        assert first is not None and first.endswith(":1")
        assert ProgressService.publish_progress(project, "SCRIPT_GENERATING", 10, "a") is not None
        assert ProgressService.publish_progress(project, "SCRIPT_GENERATING", 20, "b") is None
        error_id = ProgressService.publish_error(
            project, "GEMINI_API_ERROR", "boom", "SCRIPT_GENERATING", 1
        )
        assert error_id is not None and error_id.endswith(":4")
        # A retried request (same Idempotency-Key) is answered with the first id.
        publisher = _sync.publisher()
        held = publisher.hold(project, _event.log("INFO", "once"), None)
        assert publisher.transport.send(project, held) == publisher.transport.send(project, held)

        async def via_asyncio() -> str | None:
            return await progress_aio.ProgressService.publish_complete(project, "COMPLETED")

        assert asyncio.run(via_asyncio()) is not None
    finally:
        progress_hub.configure(hub_url=None)
    events = [(f["event"], f["data"].get("progress")) for f in redis_server.history(project)]
    assert events == [
        ("stage_change", 5),
        ("progress_update", 10),
        ("progress_update", 20),
        ("error", None),
        ("log", None),
        ("complete", None),
    ]
    assert redis_server.history(project)[3]["data"]["is_retryable"] is True


def test_a_held_update_of_an_ended_loop_goes_out_before_a_later_loops_events(
    redis_server: RedisServer,
) -> None:
    project = new_project()
    service = progress_aio.ProgressService

    async def first() -> None:
        await service.publish_progress(project, "RENDERING", 10, "a")
        assert await service.publish_progress(project, "RENDERING", 90, "b") is None

    async def second() -> None:
        await service.publish_stage_change(project, "RENDERING", "UPLOADING", 95)
        await service.publish_complete(project, "COMPLETED", "https://youtube.com/x")

    asyncio.run(first())  # ends inside the window: `asyncio.run` cancels the flush task
    assert [f["data"].get("progress") for f in redis_server.history(project)] == [10, 90]
    asyncio.run(second())
    frames = redis_server.history(project)
    assert [f["event"] for f in frames] == [
        "progress_update",
        "progress_update",
        "stage_change",
        "complete",
    ]
    assert redis_server.state(project)["status"] == "COMPLETED"


def test_a_new_loop_first_sends_what_a_closed_loop_still_holds(
    redis_server: RedisServer,
) -> None:
    project = new_project()
    service = progress_aio.ProgressService
    loop = asyncio.new_event_loop()
    loop.run_until_complete(service.publish_progress(project, "RENDERING", 10, "a"))
    loop.run_until_complete(service.publish_progress(project, "RENDERING", 90, "b"))
    loop.close()  # closed without cancelling its tasks: the flush task never runs

    async def second() -> None:
        await service.publish_complete(project, "COMPLETED", "https://youtube.com/x")

    asyncio.run(second())
    frames = redis_server.history(project)
    assert [(f["event"], f["data"].get("progress")) for f in frames] == [
        ("progress_update", 10),
        ("progress_update", 90),
        ("complete", None),
    ]
    assert redis_server.state(project)["status"] == "COMPLETED"
