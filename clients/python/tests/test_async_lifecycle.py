"""The asyncio publisher's own life: it rides out an outage as the synchronous one does
(and gives up with the same typed error), and its connections close on their loop when
the loop ends or when a new configuration replaces it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time

import pytest
import redis
from conftest import Hub, RedisServer, new_project, wait_for

import progress_hub
from progress_hub import PublishUnavailable
from progress_hub import aio as progress_aio
from progress_hub._transport_async import AsyncHttpTransport


def test_an_async_outage_longer_than_the_budget_is_a_typed_error() -> None:
    progress_hub.configure(redis_url="redis://127.0.0.1:1", retry_for=0.3, command_timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(PublishUnavailable, match=r"Redis unreachable for 0.3 s"):
            asyncio.run(progress_aio.ProgressService.publish_log("p", "INFO", "x"))
        assert time.monotonic() - started < 5
    finally:
        progress_hub.configure(
            redis_url=progress_hub.config.DEFAULT_REDIS_URL, retry_for=30.0, command_timeout=2.0
        )


def test_an_async_publish_rides_out_a_paused_redis_and_lands_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    project = new_project()
    progress_hub.configure(command_timeout=0.2)
    sent: list[str | None] = []
    redis_server.pause()
    try:
        with caplog.at_level(logging.WARNING, logger="progress_hub"):
            publishing = threading.Thread(
                target=lambda: sent.append(
                    asyncio.run(progress_aio.ProgressService.publish_log(project, "INFO", "x"))
                )
            )
            publishing.start()
            wait_for(
                "the publish to retry",
                lambda: any("retrying log" in r.getMessage() for r in caplog.records),
            )
    finally:
        redis_server.resume()
    publishing.join(timeout=30)
    progress_hub.configure(command_timeout=2.0)
    assert sent and sent[0] is not None and sent[0].endswith(":1")
    assert [f["id"] for f in redis_server.history(project)] == sent


def connections(observer: redis.Redis) -> set[str]:
    """The ids of the clients connected to the observer's Redis."""
    return {c["id"] for c in observer.client_list()}


def test_the_loops_redis_connections_close_when_the_loop_ends(redis_server: RedisServer) -> None:
    observer = redis_server.client()
    before = connections(observer)

    async def run() -> tuple[progress_aio._Publisher, set[str]]:
        await progress_aio.ProgressService.publish_log(new_project(), "INFO", "x")
        return progress_aio.publisher(), connections(observer) - before

    kept, opened = asyncio.run(run())  # held on to: only closing, not collecting, drops them
    assert opened, "the publish opened a connection"
    wait_for("the loop's connection to close", lambda: not opened & connections(observer))
    assert kept.transport is not None


def test_a_replaced_publisher_closes_its_connections(redis_server: RedisServer) -> None:
    observer = redis_server.client()
    before = connections(observer)

    async def run() -> None:
        await progress_aio.ProgressService.publish_log(new_project(), "INFO", "x")
        old = progress_aio.publisher()
        opened = connections(observer) - before
        assert opened, "the publish opened a connection"
        progress_hub.configure(retry_for=29.0)
        try:
            await progress_aio.ProgressService.publish_log(new_project(), "INFO", "y")
            assert progress_aio.publisher() is not old
            # The old one closes in the background, on this loop.
            while opened & connections(observer):
                await asyncio.sleep(0.01)
        finally:
            progress_hub.configure(retry_for=30.0)

    asyncio.run(asyncio.wait_for(run(), timeout=30))


def test_http_mode_closes_its_client_with_the_loop(hub: Hub, redis_server: RedisServer) -> None:
    progress_hub.configure(hub_url=hub.base)
    try:

        async def run() -> progress_aio._Publisher:
            await progress_aio.ProgressService.publish_log(new_project(), "INFO", "x")
            return progress_aio.publisher()

        kept = asyncio.run(run())
    finally:
        progress_hub.configure(hub_url=None)
    transport = kept.transport
    assert isinstance(transport, AsyncHttpTransport)
    assert transport.client.is_closed


@pytest.mark.parametrize("mode", ["http", "redis"])
def test_reconfiguring_under_in_flight_sends_lets_them_finish_on_the_old_client(
    hub: Hub, redis_server: RedisServer, mode: str
) -> None:
    """`configure()` while sends are in flight (held in flight: the hub, or Redis, is
    stopped): they finish on the old client, which is closed after them, not under them.
    Before, HTTP sends failed on the closed client (RuntimeError: "the client has been
    closed"); Redis mode (redis-py rides it out) is held to the same: every send lands and
    the old client's connections are closed at the end."""
    project = new_project()
    progress_hub.configure(hub_url=hub.base if mode == "http" else None, command_timeout=20)
    messages = [f"m{i}" for i in range(20)]
    observer = redis_server.client()
    before = connections(observer)
    stopped = hub.proc.pid if mode == "http" else redis_server.proc.pid

    async def run() -> tuple[progress_aio._Publisher, list[str | None]]:
        await progress_aio.ProgressService.publish_log(project, "INFO", "first")
        old = progress_aio.publisher()
        os.kill(stopped, signal.SIGSTOP)
        try:
            sends = [
                asyncio.create_task(progress_aio.ProgressService.publish_log(project, "INFO", m))
                for m in messages
            ]
            await asyncio.sleep(0.2)  # the requests are out; no answer can come
            progress_hub.configure(retry_for=29.0)
            # The next use of the loop's publisher replaces (and retires) the old one.
            assert progress_aio.publisher() is not old
            while not old._closed:
                await asyncio.sleep(0.01)
            for _ in range(20):  # the old publisher's close goes as far as it may
                await asyncio.sleep(0)
        finally:
            os.kill(stopped, signal.SIGCONT)
        ids = await asyncio.gather(*sends)
        while progress_aio._closing:
            await asyncio.sleep(0.01)
        if mode == "redis":  # what the old client opened is closed (seen by Redis)
            deadline = time.monotonic() + 5
            while connections(observer) - before and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            left = connections(observer) - before
            assert not left, f"the old client's connections are still open: {left}"
        return old, ids

    try:
        old, ids = asyncio.run(asyncio.wait_for(run(), timeout=60))
    finally:
        progress_hub.configure(hub_url=None, retry_for=30.0, command_timeout=2.0)
    assert all(ids), ids
    landed = [f["data"]["message"] for f in redis_server.history(project)]
    assert sorted(landed) == sorted(["first", *messages])
    if isinstance(old.transport, AsyncHttpTransport):
        assert old.transport.client.is_closed, "the old client is closed after its sends"
