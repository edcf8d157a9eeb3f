"""A publish whose answer is lost (the script ran in Redis, the connection broke before
its reply came back) is sent again by the publisher's retry loop, marked as a retry, so
`publish.lua` finds its receipt and answers the first attempt's id: the event is in the
history once. Both transports, on one node and on a cluster (whose client sends it again
by itself, unmarked: the last publish's receipt, checked on every publish, finds it),
through a proxy that loses that one answer."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
import redis
from conftest import RedisCluster, RedisServer, new_project
from lossy_proxy import LossyProxy, is_event_id
from redis.crc import key_slot

from progress_hub._coalesce import Held
from progress_hub._contract import publish_script
from progress_hub._event import log, new_trace_id, prepare
from progress_hub._redis import history_key
from progress_hub._transport_async import AsyncRedisTransport
from progress_hub._transport_sync import RedisTransport
from progress_hub.config import Config

MODES = pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])


def held(project: str, message: str) -> Held:
    event = log("INFO", message)
    return Held(event, prepare(event, project, "en"), new_trace_id(), None)


def publish(url: str, project: str, proxy: LossyProxy, asynchronous: bool) -> list[str]:
    """A warm-up publish (it loads the script, so the armed call is the script's own),
    then one whose answer the proxy loses: the ids the transport returned."""
    config = Config(redis_url=url, retry_for=30.0)
    if not asynchronous:
        transport = RedisTransport(config)
        try:
            sent = [transport.send(project, held(project, "warm-up"))]
            proxy.arm()
            sent.append(transport.send(project, held(project, "lost answer")))
            return sent
        finally:
            transport.close()

    async def publish_async() -> list[str]:
        transport = AsyncRedisTransport(config)
        try:
            sent = [await transport.send(project, held(project, "warm-up"))]
            proxy.arm()
            sent.append(await transport.send(project, held(project, "lost answer")))
            return sent
        finally:
            await transport.close()

    return asyncio.run(publish_async())


def check_once(proxy: LossyProxy, frames: list[dict[str, Any]], sent: list[str]) -> None:
    """The lost answer was the second publish's, whose id the transport returned, and
    the history holds each event once."""
    assert len(proxy.lost) == 1, "the proxy lost one answer"
    (lost,) = proxy.lost
    assert is_event_id(lost), f"publish.lua answered {lost!r}"
    lost_id = lost[0] if isinstance(lost, list) else lost
    assert [f["data"]["message"] for f in frames] == ["warm-up", "lost answer"]
    assert [f["id"] for f in frames] == sent
    assert lost_id == sent[1].encode()


@MODES
def test_a_publish_whose_answer_is_lost_is_in_the_history_once(
    redis_server: RedisServer, asynchronous: bool
) -> None:
    project = new_project()
    with LossyProxy(redis_server.port, publish_script()) as proxy:
        sent = publish(proxy.url, project, proxy, asynchronous)
    assert proxy.connections >= 2, "the publisher connected again"
    check_once(proxy, redis_server.history(project), sent)


@MODES
def test_on_a_cluster_a_publish_whose_answer_is_lost_is_in_the_history_once(
    redis_cluster: RedisCluster, asynchronous: bool
) -> None:
    project = new_project()
    # The node of the project's slot, which tells the client it is at the proxy's port.
    slot = key_slot(history_key(project).encode())
    seed = redis.Redis(port=redis_cluster.ports[0], decode_responses=True)
    ranges = cast(list[list[Any]], seed.execute_command("CLUSTER SLOTS"))  # type: ignore[no-untyped-call]
    (port,) = (int(r[2][1]) for r in ranges if int(r[0]) <= slot <= int(r[1]))
    owner = RedisServer(port, redis_cluster.procs[redis_cluster.ports.index(port)])
    with LossyProxy(port, publish_script()) as proxy:
        node: Any = owner.client()
        node.config_set("cluster-announce-port", proxy.port)
        sent = publish(f"redis+cluster://127.0.0.1:{proxy.port}", project, proxy, asynchronous)
    check_once(proxy, owner.history(project), sent)
