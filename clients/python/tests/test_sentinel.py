"""Behind Redis Sentinel (`redis+sentinel://`): the SDK asks the sentinels for the
primary and follows a failover; a hub on the same URL delivers every event."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from conftest import RedisSentinel, Watcher, new_project, start_hub

import progress_hub
from progress_hub import ProgressService
from progress_hub import aio as progress_aio
from progress_hub._redis import SentinelSpec, Target


def test_a_sentinel_url_is_parsed_like_the_hubs() -> None:
    target = Target.parse("redis+sentinel://u:pw@h1:26379,h2:26380/mymaster/3?sentinel_password=s")
    assert target.sentinel == SentinelSpec(
        sentinels=(("h1", 26379), ("h2", 26380)),
        master="mymaster",
        db=3,
        username="u",
        password="pw",
        sentinel_password="s",
    )
    assert target.channel("p1") == "progress:p1"
    assert target.publish_command == "PUBLISH"
    for bad in (
        "redis+sentinel://h1:26379",
        "redis+sentinel://h1:26379/m/x",
        "redis+sentinel:///m",
        "rediss+sentinel://h1:26379/m",
    ):
        with pytest.raises(ValueError):
            Target.parse(bad)


def test_publishing_through_sentinel_follows_a_failover(
    redis_sentinel: RedisSentinel, watch: Callable[[str], Watcher]
) -> None:
    hub = start_hub(redis_sentinel.url)
    try:
        progress_hub.configure(redis_url=redis_sentinel.url, retry_for=30.0)
        project = new_project()
        watcher = watch(hub.ws_url(project))
        ProgressService.publish_log(project, "INFO", "before")
        redis_sentinel.failover()
        # The client's pooled connection is to the old primary: the sentinels are asked
        # before the publish, the pool drops it and connects to the new one.
        ProgressService.publish_log(project, "INFO", "after")

        async def complete() -> str | None:
            return await progress_aio.ProgressService.publish_complete(project, "COMPLETED")

        assert asyncio.run(complete()) is not None
        frames = watcher.wait_complete()
        assert [f["event"] for f in frames] == ["log", "log", "complete"]
        assert [f["data"].get("message") for f in frames[:2]] == ["before", "after"]
        assert [f["id"].split(":")[1] for f in frames] == ["1", "2", "3"]
        assert frames == redis_sentinel.history(project)
    finally:
        progress_hub.configure(redis_url=progress_hub.config.DEFAULT_REDIS_URL)
        hub.proc.terminate()
        hub.proc.wait(timeout=10)
