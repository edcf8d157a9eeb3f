"""On a Redis Cluster (`redis+cluster://`): the same script on the project's slot, and
sharded Pub/Sub (SPUBLISH on `progress:{id}`) to a hub watching the same cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from conftest import RedisCluster, Watcher, new_project, start_hub

import progress_hub
from progress_hub import ProgressService, PublishUnavailable
from progress_hub import aio as progress_aio


def test_publishing_on_a_cluster_reaches_the_hubs_clients(
    redis_cluster: RedisCluster, watch: Callable[[str], Watcher]
) -> None:
    hub = start_hub(redis_cluster.url)
    try:
        progress_hub.configure(redis_url=redis_cluster.url)
        projects = [new_project() for _ in range(3)]  # on different slots, likely nodes
        watchers = [watch(hub.ws_url(p)) for p in projects]
        for project in projects:
            ProgressService.publish_stage_change(project, "INITIALIZED", "SCRIPT_GENERATING", 5)
            ProgressService.publish_log(project, "INFO", "on a cluster")

            async def complete(project: str = project) -> str | None:
                return await progress_aio.ProgressService.publish_complete(project, "FAILED")

            assert asyncio.run(complete()) is not None
        for project, watcher in zip(projects, watchers, strict=True):
            frames = watcher.wait_complete()
            assert [f["event"] for f in frames] == ["stage_change", "log", "complete"]
            assert frames == redis_cluster.history(project)
            assert [f["id"].split(":")[1] for f in frames] == ["1", "2", "3"]
    finally:
        progress_hub.configure(redis_url=progress_hub.config.DEFAULT_REDIS_URL)
        hub.proc.terminate()
        hub.proc.wait(timeout=10)


def test_an_unreachable_cluster_is_retried_then_a_typed_error() -> None:
    progress_hub.configure(
        redis_url="redis+cluster://127.0.0.1:1,127.0.0.1:2", retry_for=0.5, command_timeout=0.2
    )
    try:
        with pytest.raises(PublishUnavailable, match=r"unreachable for 0.5 s"):
            ProgressService.publish_log("p1", "INFO", "x")
        with pytest.raises(PublishUnavailable, match=r"unreachable for 0.5 s"):
            asyncio.run(progress_aio.ProgressService.publish_log("p1", "INFO", "x"))
    finally:
        progress_hub.configure(
            redis_url=progress_hub.config.DEFAULT_REDIS_URL, retry_for=30.0, command_timeout=2.0
        )
