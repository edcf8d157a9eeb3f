"""Tags (issue 26 §2) from the SDK: the publish call's `tags=` and a Celery
`ProgressTask`'s run give the project's run its tags, as the hub does (the state's
`tags`, and each tag's index `progress:{tag:<tag>}:projects`, written after the script);
every run that begins goes into the index of every project (the reserved tag `*`), as
the script says; hostile tags (`*` among them) raise `InvalidEvent` and publish nothing."""

from __future__ import annotations

import pytest
from conftest import RedisCluster, RedisServer, new_project

import progress_hub
from progress_hub import InvalidEvent, ProgressService, _event, _run, _sync
from progress_hub._redis import tag_index_key


def test_the_publish_call_gives_the_run_its_tags(redis_server: RedisServer) -> None:
    project = new_project()
    event = _event.progress_update("RENDERING", 10, "x", None)
    sent = _sync.publisher().publish(project, event, tags=["user:7", "team:2"])
    assert sent is not None
    client = redis_server.client()
    assert redis_server.state(project)["tags"] == "user:7,team:2"
    for tag in ("user:7", "team:2"):
        assert client.zscore(tag_index_key(tag), project) is not None, tag
    # A later event without tags keeps them.
    ProgressService.publish_log(project, "INFO", "m")
    assert redis_server.state(project)["tags"] == "user:7,team:2"


def test_a_runs_first_publish_carries_its_tags(redis_server: RedisServer) -> None:
    """What `ProgressTask` does with its `tags` argument (`progress_tags_arg`)."""
    project = new_project()
    token = _run.current_run.set(_run.Run(None, tags=("user:9",)))
    try:
        ProgressService.publish_stage_change(project, "INITIALIZED", "SCRIPT_GENERATING", 5)
        assert redis_server.state(project)["tags"] == "user:9"
        assert _run.take_tags() is None  # given once
    finally:
        _run.current_run.reset(token)
    assert redis_server.client().zscore(tag_index_key("user:9"), project) is not None


def test_tagged_gives_the_next_publish_its_tags(redis_server: RedisServer) -> None:
    project = new_project()
    with progress_hub.tagged(["team:4"]):
        ProgressService.publish_log(project, "INFO", "first")
        ProgressService.publish_progress(project, "RENDERING", 10, "x")
    assert redis_server.state(project)["tags"] == "team:4"
    assert redis_server.client().zscore(tag_index_key("team:4"), project) is not None
    with pytest.raises(InvalidEvent), progress_hub.tagged(["a b"]):
        pass


def test_every_run_that_begins_goes_into_the_index_of_every_project(
    redis_server: RedisServer,
) -> None:
    """`publish.lua` answers whether the publish began the project's history or a run;
    the SDK then writes `progress:{tag:*}:projects`, as the hub does (its list and its
    `*` feed read it): once per run, not per event."""
    project = new_project()
    client = redis_server.client()
    key = tag_index_key("*")
    assert key == "progress:{tag:*}:projects"
    ProgressService.publish_progress(project, "RENDERING", 10, "x")
    first = client.zscore(key, project)
    assert first is not None
    ProgressService.publish_log(project, "INFO", "within the run")
    assert client.zscore(key, project) == first
    ProgressService.publish_complete(project, "COMPLETED")
    assert client.zscore(key, project) == first
    assert client.ttl(key) > 0
    ProgressService.publish_progress(project, "RENDERING", 5, "the next run")
    again = client.zscore(key, project)
    assert again is not None and again >= first
    assert "*" not in redis_server.state(project).get("tags", "")


@pytest.mark.parametrize(
    "tags",
    [
        "*",
        ["*"],
        ["user:7", "*"],
        "user:7",
        [7],
        [None],
        [""],
        ["t" * 65],
        ["a,b"],
        ["{slot}"],
        ["a b"],
        ["ü"],
        ["a", "a"],
        [f"t{i}" for i in range(9)],
    ],
)
def test_hostile_tags_raise_and_publish_nothing(redis_server: RedisServer, tags: object) -> None:
    project = new_project()
    event = _event.log("INFO", "m")
    with pytest.raises(InvalidEvent) as raised:
        _sync.publisher().publish(project, event, tags=tags)  # type: ignore[arg-type]
    assert raised.value.field == "tags"
    assert redis_server.history(project) == []


def test_tags_on_a_cluster(redis_cluster: RedisCluster) -> None:
    from redis.cluster import ClusterNode
    from redis.cluster import RedisCluster as Client

    progress_hub.configure(redis_url=redis_cluster.url)
    try:
        projects = [new_project() for _ in range(4)]
        for project in projects:
            event = _event.log("INFO", "m")
            assert _sync.publisher().publish(project, event, tags=["team:1"]) is not None
    finally:
        progress_hub.configure(redis_url=progress_hub.config.DEFAULT_REDIS_URL)
    seed = ClusterNode("127.0.0.1", redis_cluster.ports[0])  # type: ignore[no-untyped-call]
    client = Client(startup_nodes=[seed], decode_responses=True)
    try:
        assert sorted(client.zrange(tag_index_key("team:1"), 0, -1)) == sorted(projects)
        every = set(client.zrange(tag_index_key("*"), 0, -1))
        assert set(projects) <= every
    finally:
        client.close()
