"""Watching projects from Python: `progress_hub.watch`, an asyncio iterator of the frames
the hub sends for one project, many, or a tag, that reconnects and resumes by itself.

    async for frame in progress_hub.watch(hub_url, projects=["a", "b"], token=...):
        print(frame.project_id, frame.event, frame.data)

It reads the hub's multiplexed SSE stream (`GET /api/v1/progress/events`, see
docs/PROTOCOL.md) over httpx (the `http` extra): one connection for every project and
tag, the frames of the multiplexed WebSocket (each subscription's with its `project_id`
or `tag`). The stream's `id:` holds every project's position; after a dropped
connection or a hub restart the watcher reconnects with it, and each project resumes
where it stood: no event lost, none twice (a tag's feed sends its snapshot again).

The reconnect policy is the TypeScript client's (`clients/js/src/machine.ts`): delays of
`initial_backoff * 2**attempt`, capped at `max_backoff`, jittered to 50-100 %, the
attempt count reset by each `connected`; a 400, 401, 403 or 404 stops the watch with a
`WatchRefused` (retrying cannot help); anything else (a network error, a 5xx, a 503 of
a full hub, a stream that ends, one silent for two heartbeat intervals) reconnects.

Only asyncio: a watcher is a long-lived stream, and a synchronous program runs it with
`asyncio.run` (docs/PYTHON.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from . import _contract
from .errors import WatchRefused

if TYPE_CHECKING:
    import httpx

__all__ = ["Frame", "watch"]

logger = logging.getLogger("progress_hub")

#: Statuses after which reconnecting cannot help (machine.ts's `refused`).
FINAL_STATUSES = frozenset({400, 401, 403, 404})
#: The heartbeat interval assumed until `connected` says it.
DEFAULT_HEARTBEAT = 30.0


@dataclass(frozen=True)
class Frame:
    """One frame of the stream: `event` and `data` as sent, the project or tag it
    belongs to (`None` for the connection's own: `connected`), its event `id` (when it
    has one), and `position`: the stream's resume position after it (pass it as
    `last_event_id` to a later `watch` of the same projects to resume there)."""

    event: str
    data: Any
    project_id: str | None = None
    tag: str | None = None
    id: str | None = None
    position: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_final(self) -> bool:
        """A `complete` frame, or a snapshot or state of a run that has ended."""
        if self.event == "complete":
            return True
        if self.event in ("snapshot", "project_state") and isinstance(self.data, dict):
            return self.data.get("status") in _contract.wire_values()["complete_statuses"]
        return False


def _items(one: str | None, many: Sequence[str] | None, what: str) -> list[str]:
    if isinstance(many, str):
        raise TypeError(f"{what}s= takes a list; use {what}= for one")
    items = ([one] if one is not None else []) + list(many or [])
    for item in items:
        if not isinstance(item, str) or not item or "," in item:
            raise ValueError(f"invalid {what}: {item!r}")
    return items


def _url(hub_url: str, projects: list[str], tags: list[str]) -> str:
    query = []
    if projects:
        query.append("projects=" + quote(",".join(projects), safe=",:@"))
    if tags:
        query.append("tags=" + quote(",".join(tags), safe=",:@"))
    return hub_url.rstrip("/") + "/api/v1/progress/events?" + "&".join(query)


def _delay(attempt: int, initial: float, cap: float) -> float:
    ceiling: float = min(cap, initial * 2.0 ** min(attempt, 30))
    return ceiling * (0.5 + random.random() / 2)


async def watch(
    hub_url: str,
    *,
    project: str | None = None,
    projects: Sequence[str] | None = None,
    tag: str | None = None,
    tags: Sequence[str] | None = None,
    token: str | None = None,
    last_event_id: str | None = None,
    until_complete: bool | None = None,
    initial_backoff: float = 0.5,
    max_backoff: float = 30.0,
    client: httpx.AsyncClient | None = None,
) -> AsyncGenerator[Frame, None]:
    """Yields the frames of `project`/`projects` and `tag`/`tags` (at least one), past
    reconnects, until the caller stops iterating, or with `until_complete` (the default
    for a single `project=`), until each project's run has ended (its `complete`, or a
    snapshot of an ended run). `ping` frames are answered by nothing (SSE) and not
    yielded; each reconnect yields its `connected` and `subscribed` frames.

    `last_event_id`: a `Frame.position` of an earlier watch of the same projects (or,
    for one project, its event id). Raises `WatchRefused` on a refusal that retrying
    cannot help (a bad id or query, a missing or invalid token).
    """
    import httpx

    project_list = _items(project, projects, "project")
    tag_list = _items(tag, tags, "tag")
    if not project_list and not tag_list:
        raise ValueError("watch needs a project, projects, a tag or tags")
    if until_complete is None:
        until_complete = project is not None and not projects and not tag_list
    url = _url(hub_url, project_list, tag_list)
    headers = {"accept": "text/event-stream"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    position = last_event_id
    pending = set(project_list)
    attempt = 0
    owned = client is None
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None))
    try:
        while True:
            if position:
                headers["last-event-id"] = position
            else:
                headers.pop("last-event-id", None)
            try:
                async with http.stream("GET", url, headers=headers) as response:
                    if response.status_code != 200:
                        body = await response.aread()
                        code, message = _error_of(body)
                        if response.status_code in FINAL_STATUSES:
                            raise WatchRefused(code, message, response.status_code)
                        raise _Retry(f"HTTP {response.status_code} {code}: {message}")
                    heartbeat = [DEFAULT_HEARTBEAT]  # read by `_records` as it changes
                    records = contextlib.aclosing(_records(response, heartbeat))
                    async with records as stream:
                        async for record_id, frame in stream:
                            if record_id is not None:
                                position = record_id
                            if frame.get("event") == "ping":
                                continue
                            typed = _typed(frame, position)
                            if typed.event == "connected" and isinstance(typed.data, dict):
                                attempt = 0
                                interval = typed.data.get("heartbeat_interval")
                                if isinstance(interval, (int, float)) and interval > 0:
                                    heartbeat[0] = float(interval)
                            yield typed
                            if until_complete and typed.is_final and typed.project_id:
                                pending.discard(typed.project_id)
                                if not pending:
                                    return
                    raise _Retry("the stream ended")
            except (httpx.HTTPError, _Retry, json.JSONDecodeError) as err:
                delay = _delay(attempt, initial_backoff, max_backoff)
                attempt += 1
                logger.info("watch: reconnecting in %.2f s (%s)", delay, err)
                await asyncio.sleep(delay)
    finally:
        if owned:
            await http.aclose()


class _Retry(Exception):
    """A failure that a reconnect may cure."""


def _error_of(body: bytes) -> tuple[str, str]:
    try:
        error = json.loads(body)["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return "HTTP_ERROR", body[:200].decode("utf-8", "replace")


def _typed(frame: dict[str, Any], position: str | None) -> Frame:
    event_id = frame.get("id")
    project_id = frame.get("project_id")
    tag = frame.get("tag")
    return Frame(
        event=str(frame.get("event")),
        data=frame.get("data"),
        project_id=project_id if isinstance(project_id, str) else None,
        tag=tag if isinstance(tag, str) else None,
        id=event_id if isinstance(event_id, str) else None,
        position=position,
        raw=frame,
    )


async def _records(
    response: httpx.Response, heartbeat: list[float]
) -> AsyncGenerator[tuple[str | None, dict[str, Any]], None]:
    """The stream's records: (its `id:`, or None when it has none; its frame). A stream
    silent for two heartbeat intervals (and a few seconds) is dead: `_Retry`."""
    lines = response.aiter_lines()
    try:
        async for record in _parse(lines, heartbeat):
            yield record
    finally:
        await lines.aclose()  # type: ignore[attr-defined]


async def _parse(
    lines: AsyncIterator[str], heartbeat: list[float]
) -> AsyncGenerator[tuple[str | None, dict[str, Any]], None]:
    record_id: str | None = None
    data: list[str] = []
    while True:
        silence = 2 * heartbeat[0] + 5
        try:
            line = await asyncio.wait_for(lines.__anext__(), silence)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise _Retry(f"nothing heard for {silence:g} s") from None
        if line == "":
            if data:
                frame = json.loads("\n".join(data))
                if isinstance(frame, dict):
                    yield record_id, frame
            record_id, data = None, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "id":
                record_id = value
