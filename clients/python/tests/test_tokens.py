"""`progress_hub.tokens.mint` makes the tokens the hub checks, against the real hub
binary with `--auth-secret`: the claims are those `progress-hub token` writes; a watch
token opens its project's WebSocket and nothing else; a wrong secret, another project, an
expired or not-yet-valid token and a token without the scope are refused with the hub's
HTTP status or close code. Hostile arguments are refused, naming the argument."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from conftest import HUB_BIN, Hub, RedisServer, _stop, new_project, start_hub

import progress_hub
from progress_hub import ProgressService, tokens
from progress_hub.tokens import InvalidTokenArgument

SECRET = "s3cret-for-tests"


@pytest.fixture
def guarded_hub(redis_server: RedisServer) -> Iterator[Hub]:
    started = start_hub(redis_server.url, "--auth-secret", SECRET)
    yield started
    _stop(started.proc)


def decoded(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The token's header and claims."""

    def part(text: str) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        return parsed

    header, claims, _ = token.split(".")
    return part(header), part(claims)


def status(hub: Hub, project: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{hub.base}/api/v1/projects/{project}", headers=headers).status_code


def ws_refusal(hub: Hub, project: str, token: str) -> int | None:
    """The HTTP status the hub refuses the WebSocket upgrade with (None: it opened)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    try:
        with connect(f"{hub.ws_url(project)}?token={token}", open_timeout=10):
            return None
    except InvalidStatus as refused:
        return refused.response.status_code


def test_the_claims_are_the_hub_clis() -> None:
    """The same header and claims as `progress-hub token` (the hub's own minting)."""

    def cli(*extra: str) -> str:
        done = subprocess.run(
            [str(HUB_BIN), "token", "--project", "p-1", "--ttl", "1h", *extra],
            env={"HUB_AUTH_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout.strip()

    for extra, scope in (((), "watch"), (("--publish",), "publish")):
        theirs = decoded(cli(*extra))
        ours = decoded(tokens.mint(SECRET, projects=["p-1"], scope=scope))  # type: ignore[arg-type]
        assert ours[0] == theirs[0] == {"alg": "HS256", "typ": "JWT"}
        assert ours[1].keys() == theirs[1].keys()
        assert {k: v for k, v in ours[1].items() if k != "exp"} == {
            k: v for k, v in theirs[1].items() if k != "exp"
        }
        assert abs(ours[1]["exp"] - theirs[1]["exp"]) <= 5


def test_a_watch_token_opens_its_projects_websocket_only(guarded_hub: Hub) -> None:
    project, other = new_project(), new_project()
    watch = tokens.mint(SECRET, projects=[project], ttl=60)
    assert ws_refusal(guarded_hub, project, watch) is None
    assert ws_refusal(guarded_hub, other, watch) == 403, "another project"
    assert ws_refusal(guarded_hub, project, tokens.mint("wrong", projects=[project])) == 401
    later = tokens.mint(SECRET, projects=[project], not_before=time.time() + 3600)
    assert ws_refusal(guarded_hub, project, later) == 401, "not yet valid"
    everything = tokens.mint(SECRET, projects=["*"], ttl=timedelta(minutes=1))
    assert ws_refusal(guarded_hub, other, everything) is None
    # Tags are minted (issue #27's contract) and ignored by the hub until tag
    # subscriptions arrive (issue #26): a tags-only token opens no project.
    tagged = tokens.mint(SECRET, tags=["user:7"])
    assert decoded(tagged)[1]["tags"] == ["user:7"]
    assert ws_refusal(guarded_hub, project, tagged) == 403
    assert status(guarded_hub, project, None) == 401
    assert status(guarded_hub, project, watch) in (200, 404)


def test_an_expiring_token_ends_the_session_with_4401(guarded_hub: Hub) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    project = new_project()
    brief = tokens.mint(SECRET, projects=[project], ttl=3)
    with connect(f"{guarded_hub.ws_url(project)}?token={brief}", open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frame = json.loads(ws.recv(timeout=30))
                if frame.get("event") == "ping":
                    ws.send(json.dumps({"event": "pong"}))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


@pytest.mark.parametrize("scope", ["watch", "control"])
def test_only_the_publish_scope_publishes(
    guarded_hub: Hub, redis_server: RedisServer, scope: tokens.Scope
) -> None:
    project = new_project()
    progress_hub.configure(
        hub_url=guarded_hub.base, token=tokens.mint(SECRET, projects=["*"], scope=scope)
    )
    try:
        with pytest.raises(progress_hub.PublishRefused) as refused:
            ProgressService.publish_log(project, "INFO", "not allowed")
        assert refused.value.status == 403
        progress_hub.configure(token=tokens.mint(SECRET, projects=[project], scope="publish"))
        sent = ProgressService.publish_log(project, "INFO", "allowed")
    finally:
        progress_hub.configure(hub_url=None, token=None)
    assert sent is not None
    assert [f["data"]["message"] for f in redis_server.history(project)] == ["allowed"]
    assert status(guarded_hub, project, tokens.mint(SECRET, projects=[project], scope=scope)) == 200


def test_mint_token_is_a_deprecated_alias(guarded_hub: Hub) -> None:
    project = new_project()
    with pytest.warns(DeprecationWarning, match=r"tokens\.mint"):
        watch = progress_hub.mint_token(SECRET, [project], ttl=60)
    with pytest.warns(DeprecationWarning):
        publish = progress_hub.mint_token(SECRET, ["*"], publish=True)
    assert decoded(publish)[1]["scope"] == "publish"
    assert "scope" not in decoded(watch)[1]
    assert ws_refusal(guarded_hub, project, watch) is None
    from progress_hub.token import mint_token  # where it shipped

    assert mint_token is progress_hub.mint_token


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"secret": ""}, "secret"),
        ({"secret": None}, "secret"),
        ({"projects": ()}, "projects"),
        ({"projects": "p-1"}, "projects"),
        ({"projects": [42]}, "projects"),
        ({"projects": [None]}, "projects"),
        ({"projects": 7}, "projects"),
        ({"projects": [""]}, "projects"),
        ({"projects": ["a" * 65]}, "projects"),
        ({"projects": ["a/b"]}, "projects"),
        ({"projects": ["a b"]}, "projects"),
        ({"projects": ["p\n"]}, "projects"),
        ({"projects": ["*x"]}, "projects"),
        ({"projects": ["é"]}, "projects"),
        ({"tags": ["user:7\x00"]}, "tags"),
        ({"tags": ["a b"]}, "tags"),
        ({"tags": [""]}, "tags"),
        ({"tags": ["t" * 129]}, "tags"),
        ({"tags": [b"t"]}, "tags"),
        ({"scope": "admin"}, "scope"),
        ({"scope": "PUBLISH"}, "scope"),
        ({"scope": None}, "scope"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": -1}, "ttl"),
        ({"ttl": math.nan}, "ttl"),
        ({"ttl": math.inf}, "ttl"),
        ({"ttl": 1e30}, "ttl"),
        ({"ttl": "3600"}, "ttl"),
        ({"ttl": True}, "ttl"),
        ({"ttl": timedelta(seconds=-5)}, "ttl"),
        ({"not_before": math.inf}, "not_before"),
        ({"not_before": -1}, "not_before"),
        ({"not_before": "now"}, "not_before"),
    ],
)
def test_a_bad_argument_is_named(arguments: dict[str, Any], named: str) -> None:
    given: dict[str, Any] = {"secret": SECRET, "projects": ["p-1"], **arguments}
    secret = given.pop("secret")
    with pytest.raises(InvalidTokenArgument, match=f"^{named}:") as refused:
        tokens.mint(secret, **given)
    assert refused.value.argument == named
    assert isinstance(refused.value, ValueError)


def test_the_docs_call_mint_with_its_real_arguments() -> None:
    """Every `tokens.mint(...)` in the docs' Python blocks names only real parameters."""
    import ast
    import inspect
    import re

    from conftest import REPO

    parameters = list(inspect.signature(tokens.mint).parameters)
    calls = 0
    for doc in ("docs/PYTHON.md", "docs/PROTOCOL.md"):
        text = (REPO / doc).read_text(encoding="utf-8")
        for block in re.findall(r"```python\n(.*?)```", text, re.S):
            for node in ast.walk(ast.parse(block)):
                if isinstance(node, ast.FunctionDef) and node.name == "mint":
                    arguments = node.args.args + node.args.kwonlyargs
                    assert [a.arg for a in arguments] == parameters, doc
                if isinstance(node, ast.Call) and ast.unparse(node.func) == "tokens.mint":
                    calls += 1
                    named = {k.arg for k in node.keywords}
                    assert named <= set(parameters), f"{doc}: {ast.unparse(node)}"
    assert calls >= 3
