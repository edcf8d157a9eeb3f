"""`mint_token` makes the tokens the hub checks: against the real hub binary with
`--auth-secret`, a watch token reads its project only, and a publish token publishes in
HTTP mode."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import Hub, RedisServer, _stop, new_project, start_hub

import progress_hub
from progress_hub import ProgressService, mint_token

SECRET = "s3cret-for-tests"


@pytest.fixture
def guarded_hub(redis_server: RedisServer) -> Iterator[Hub]:
    started = start_hub(redis_server.url, "--auth-secret", SECRET)
    yield started
    _stop(started.proc)


def status(hub: Hub, project: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{hub.base}/api/v1/projects/{project}", headers=headers).status_code


def test_a_minted_token_grants_what_it_says(guarded_hub: Hub, redis_server: RedisServer) -> None:
    project, other = new_project(), new_project()
    watch = mint_token(SECRET, [project], ttl=60)
    assert status(guarded_hub, project, None) == 401
    assert status(guarded_hub, project, watch) in (200, 404)
    assert status(guarded_hub, other, watch) == 403
    assert status(guarded_hub, project, mint_token("another secret", [project])) == 401
    later = mint_token(SECRET, [project], ttl=60, not_before=time.time() + 3600)
    assert status(guarded_hub, project, later) == 401

    progress_hub.configure(hub_url=guarded_hub.base, token=watch)
    try:
        with pytest.raises(progress_hub.PublishRefused) as refused:
            ProgressService.publish_log(project, "INFO", "not allowed")
        assert refused.value.status == 403
        progress_hub.configure(token=mint_token(SECRET, ["*"], publish=True, ttl=60))
        sent = ProgressService.publish_log(project, "INFO", "allowed")
    finally:
        progress_hub.configure(hub_url=None, token=None)
    assert sent is not None
    assert [f["data"]["message"] for f in redis_server.history(project)] == ["allowed"]


@pytest.mark.parametrize(
    ("call", "said"),
    [
        (lambda: mint_token("", ["p"]), "secret"),
        (lambda: mint_token("s", []), "projects"),
        (lambda: mint_token("s", "p"), "projects"),
        (lambda: mint_token("s", ["p"], ttl=0), "ttl"),
    ],
)
def test_a_bad_argument_is_named(call: object, said: str) -> None:
    with pytest.raises(ValueError, match=f"^{said}:"):
        call()  # type: ignore[operator]
