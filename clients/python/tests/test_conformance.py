"""One fixture of publish calls, run through the hub's Rust publisher (its HTTP
publish path) and through the Python one: the same frames and the same state, but for
ids, timestamps and trace ids."""

from __future__ import annotations

import json
from typing import Any, cast

import httpx
from conftest import HERE, Hub, RedisServer, new_project

from progress_hub import ProgressService

CALLS: list[tuple[str, dict[str, Any]]] = json.loads(
    (HERE / "fixtures" / "conformance.json").read_text("utf-8")
)["calls"]

#: What each method sends as an event (the seed's names to the wire's).
EVENTS = {
    "publish_progress": "progress_update",
    "publish_stage_change": "stage_change",
    "publish_log": "log",
    "publish_error": "error",
    "publish_complete": "complete",
}


def as_event(method: str, args: dict[str, Any]) -> dict[str, Any]:
    data = dict(args)
    if "error_message" in data:
        data["message"] = data.pop("error_message")
    return {"event": EVENTS[method], "data": data}


def masked(frame: dict[str, Any], project: str) -> dict[str, Any]:
    """The frame without what differs by nature: id, timestamps, trace ids, project."""
    text = json.dumps(frame, ensure_ascii=False).replace(project, "<project>")
    out: dict[str, Any] = json.loads(text)
    out.pop("id")
    for part in (out["data"], out.get("error", {})):
        for key in ("timestamp", "trace_id"):
            if key in part:
                part[key] = "<masked>"
    return out


def test_the_python_publisher_writes_the_hubs_frames(hub: Hub, redis_server: RedisServer) -> None:
    rust, python = new_project(), new_project()
    for method, args in CALLS:
        response = httpx.post(
            f"{hub.base}/api/v1/projects/{rust}/events", json=as_event(method, args)
        )
        assert response.status_code == 202, response.text
        getattr(ProgressService, method)(python, **args)

    def frames(project: str) -> list[dict[str, Any]]:
        history = redis_server.history(project)
        assert len(history) == len(CALLS)
        return [masked(f, project) for f in history]

    assert frames(python) == frames(rust)

    # Byte for byte, once what differs by nature is swapped in: key order, escaping, numbers.
    def raw(project: str) -> list[str]:
        key = f"progress:{{{project}}}:history"
        entries = cast(list[tuple[str, dict[str, str]]], redis_server.client().xrange(key))
        return [str(fields["frame"]) for _, fields in entries]

    for rust_text, python_text in zip(raw(rust), raw(python), strict=True):
        r, p = json.loads(rust_text), json.loads(python_text)
        swaps = [(p["id"], r["id"]), (python, rust)]
        swaps += [(p["data"][k], r["data"][k]) for k in ("timestamp", "trace_id") if k in p["data"]]
        for old, new in swaps:
            python_text = python_text.replace(f'"{old}"', f'"{new}"')
        assert python_text == rust_text

    def state(project: str) -> dict[str, str]:
        s = redis_server.state(project)
        for key in ("epoch", "last_event_id", "updated_at", "seq"):
            s.pop(key, None)
        for receipt in [key for key in s if key.startswith("receipt")]:
            del s[receipt]
        return s

    assert state(python) == state(rust)
