"""`progress_hub.watch` against the real hub binary and a real Redis: typed frames of
many projects and a tag on one connection, the end of a single project's run, refusals,
and a hub restart in the middle of a watch (resumed: nothing lost, nothing twice)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from conftest import PATIENCE, Hub, RedisServer, new_project, start_hub, stop

import progress_hub
from progress_hub import Frame, ProgressService, WatchRefused, watch


async def take_until(
    frames: AsyncIterator[Frame], done: Callable[[list[Frame]], bool], seen: list[Frame]
) -> None:
    """Appends frames to `seen` until `done(seen)` is true."""
    async for frame in frames:
        seen.append(frame)
        if done(seen):
            return


def run(coroutine: object) -> None:
    asyncio.run(asyncio.wait_for(coroutine, PATIENCE))  # type: ignore[arg-type]


def started(project: str, progress: int = 10) -> None:
    ProgressService.publish_progress(project, "RENDERING", progress, "rendering")


def test_many_projects_and_a_tag_on_one_watch(hub: Hub, redis_server: RedisServer) -> None:
    a, b, tagged = new_project(), new_project(), new_project()
    started(a)
    started(b)
    progress_hub.ProgressService.publish_log(tagged, "INFO", "untagged yet")
    assert redis_server  # the hub's Redis

    async def main() -> None:
        frames = watch(hub.base, projects=[a, b], initial_backoff=0.05)
        seen: list[Frame] = []
        await take_until(frames, lambda s: sum(f.event == "snapshot" for f in s) == 2, seen)
        assert seen[0].event == "connected" and seen[0].project_id is None
        assert {f.project_id for f in seen if f.event == "subscribed"} == {a, b}
        assert all(f.position and f.position.startswith("m1.") for f in seen[-1:])
        sent = ProgressService.publish_log(a, "INFO", "to a")
        frame = await anext(frames)
        assert (frame.event, frame.project_id, frame.id) == ("log", a, sent)
        assert frame.data["message"] == "to a"
        assert frame.position and f".{sent}," in frame.position
        await frames.aclose()

    run(main())


def test_every_project_on_one_watch(hub: Hub, redis_server: RedisServer) -> None:
    """`watch(tags=["*"])`: the hub's feed of every project (the reserved tag `*`), a
    project that begins after the watch included, untagged."""
    before = new_project()
    started(before)
    assert redis_server  # the hub's Redis

    async def main() -> None:
        frames = watch(hub.base, tags=["*"], initial_backoff=0.05)
        seen: list[Frame] = []
        # `subscribed`, then the snapshot (newest first): `before` is in it.
        await take_until(frames, lambda s: any(f.project_id == before for f in s), seen)
        assert [(f.event, f.tag) for f in seen[1:2]] == [("subscribed", "*")]
        assert all((f.event, f.tag) == ("project_state", "*") for f in seen[2:])
        later = new_project()
        started(later, 30)
        states: list[Frame] = []
        await take_until(frames, lambda s: any(f.project_id == later for f in s), states)
        assert all((f.event, f.tag) == ("project_state", "*") for f in states)
        mine = states[-1]
        assert (mine.data["progress"], mine.data["tags"]) == (30, [])
        await frames.aclose()

    run(main())


def test_a_single_project_watch_ends_with_its_run(hub: Hub, redis_server: RedisServer) -> None:
    project = new_project()
    started(project)

    async def main() -> list[Frame]:
        seen = []
        async for frame in watch(hub.base, project=project, initial_backoff=0.05):
            seen.append(frame)
            if frame.event == "snapshot":
                ProgressService.publish_complete(project, "COMPLETED")
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), PATIENCE))
    assert [f.event for f in seen] == ["connected", "subscribed", "snapshot", "complete"]
    assert seen[-1].is_final


def test_refusals_that_retrying_cannot_cure_raise(hub: Hub, redis_server: RedisServer) -> None:
    async def first(**options: object) -> Frame:
        async for frame in watch(hub.base, initial_backoff=0.05, **options):  # type: ignore[arg-type]
            return frame
        raise AssertionError("no frame")

    with pytest.raises(WatchRefused) as refused:
        run(first(projects=["a", "b"], last_event_id="not-a-position"))
    assert (refused.value.status, refused.value.code) == (400, "INVALID_EVENT_ID")
    with pytest.raises(ValueError):
        run(first())
    with pytest.raises(TypeError):
        run(first(projects="a"))


def test_a_hub_restart_mid_watch_resumes_with_nothing_lost_or_twice(
    redis_server: RedisServer,
) -> None:
    hub = start_hub(redis_server.url)
    listen = hub.base.removeprefix("http://")  # the port it bound: it comes back on it
    a, b = new_project(), new_project()
    started(a)
    started(b)
    sent: dict[str, list[str]] = {a: [], b: []}

    def publish(count: int) -> None:
        for i in range(count):
            for project in (a, b):
                event_id = ProgressService.publish_log(project, "INFO", f"{project} {i}")
                assert event_id
                sent[project].append(event_id)

    async def main() -> dict[str, list[str]]:
        nonlocal hub
        heard: dict[str, list[str]] = {a: [], b: []}
        connects = 0
        frames = watch(hub.base, projects=[a, b], initial_backoff=0.05, max_backoff=0.5)
        async for frame in frames:
            if frame.event == "connected":
                connects += 1
            if frame.event == "snapshot" and connects == 1 and frame.project_id == b:
                publish(5)
            if frame.event == "log" and frame.project_id and frame.id:
                heard[frame.project_id].append(frame.id)
                if len(heard[a]) + len(heard[b]) == 6 and connects == 1:
                    # Mid-watch: the hub stops, events go on into Redis, it comes back.
                    await asyncio.to_thread(stop, hub.proc)
                    await asyncio.to_thread(publish, 5)
                    hub = await asyncio.to_thread(start_hub, redis_server.url, listen=listen)
                if connects > 1 and len(heard[a]) == len(heard[b]) == 10:
                    await asyncio.to_thread(publish, 2)
                if len(heard[a]) == len(heard[b]) == 12:
                    break
        await frames.aclose()
        assert connects == 2, connects
        return heard

    try:
        heard = asyncio.run(asyncio.wait_for(main(), PATIENCE * 2))
    finally:
        stop(hub.proc)
    assert heard == sent, "every event once, in order"


def test_a_frame_says_how_many_parallel_units_are_done() -> None:
    def frame(event: str, **data: object) -> Frame:
        return Frame(event=event, data={"status": "ASSETS_GENERATING", **data})

    assert frame("progress_update", units_done=7, units_total=17).units == (7, 17)
    assert frame("snapshot", units_done=0, units_total=17).units == (0, 17)
    assert frame("project_state", units_done=17, units_total=17).units == (17, 17)
    assert frame("progress_update").units is None
    assert frame("log", units_done=7, units_total=17).units is None
    for done, total in [(3, 2), (-1, 2), (1, 0), (True, 2), ("1", 2), (1.0, 2), (1, None)]:
        assert frame("progress_update", units_done=done, units_total=total).units is None
