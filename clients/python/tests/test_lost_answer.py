"""A publish whose answer is lost (the script ran in Redis, the connection broke before
its reply came back) is sent again by the publisher's retry loop, marked as a retry, so
`publish.lua` finds its receipt and answers the first attempt's id: the event is in the
history once. Both transports, through a proxy that loses that one answer."""

from __future__ import annotations

import asyncio

from conftest import RedisServer, new_project
from lossy_proxy import LossyProxy, is_event_id

from progress_hub._coalesce import Held
from progress_hub._contract import publish_script
from progress_hub._event import log, new_trace_id, prepare
from progress_hub._transport_async import AsyncRedisTransport
from progress_hub._transport_sync import RedisTransport
from progress_hub.config import Config


def held(project: str, message: str) -> Held:
    event = log("INFO", message)
    return Held(event, prepare(event, project, "en"), new_trace_id(), None)


def check_once(redis_server: RedisServer, proxy: LossyProxy, project: str, sent: list[str]) -> None:
    """The lost answer was the second publish's, whose id the publisher returned, and
    the history holds each event once."""
    assert len(proxy.lost) == 1, "the proxy lost one answer"
    (lost,) = proxy.lost
    assert is_event_id(lost), f"publish.lua answered {lost!r}"
    lost_id = lost[0] if isinstance(lost, list) else lost
    assert proxy.connections >= 2, "the publisher connected again"
    frames = redis_server.history(project)
    assert [f["data"]["message"] for f in frames] == ["warm-up", "lost answer"]
    assert [f["id"] for f in frames] == sent
    assert lost_id == sent[1].encode()


def test_a_publish_whose_answer_is_lost_is_in_the_history_once(
    redis_server: RedisServer,
) -> None:
    project = new_project()
    with LossyProxy(redis_server.port, publish_script()) as proxy:
        transport = RedisTransport(Config(redis_url=proxy.url, retry_for=30.0))
        try:
            # The warm-up loads the script (so the armed call is the script's own).
            sent = [transport.send(project, held(project, "warm-up"))]
            proxy.arm()
            sent.append(transport.send(project, held(project, "lost answer")))
        finally:
            transport.close()
    check_once(redis_server, proxy, project, sent)


def test_an_async_publish_whose_answer_is_lost_is_in_the_history_once(
    redis_server: RedisServer,
) -> None:
    project = new_project()

    async def publish(proxy: LossyProxy) -> list[str]:
        transport = AsyncRedisTransport(Config(redis_url=proxy.url, retry_for=30.0))
        try:
            sent = [await transport.send(project, held(project, "warm-up"))]
            proxy.arm()
            sent.append(await transport.send(project, held(project, "lost answer")))
            return sent
        finally:
            await transport.close()

    with LossyProxy(redis_server.port, publish_script()) as proxy:
        sent = asyncio.run(publish(proxy))
    check_once(redis_server, proxy, project, sent)
