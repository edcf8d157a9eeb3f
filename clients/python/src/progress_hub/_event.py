"""Events of the publish path as plain data: validated as the hub validates them
(`crates/hub/src/wire/event.rs`), normalized (timestamp; for `error` the catalog's
`is_retryable` and `solutions`, `details`, a trace id), and prepared into the frame
template and state change that `publish.lua` completes. No I/O here.

The frame's bytes are the hub's bytes: `data` is serialized with sorted keys and no
spaces, as serde_json writes the hub's frames, and `progress` goes first, filled in by
the script (clamped so that progress never goes backwards within a run).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from . import _contract

# The closed sets, as the hub's wire types define them (`contract/wire-values.json`).
_VALUES = _contract.wire_values()
STAGES = _VALUES["stages"]
#: `INITIALIZED` is the state before the first stage: valid only as a previous stage.
PREVIOUS_STAGES = _VALUES["previous_stages"]
LEVELS = _VALUES["log_levels"]
COMPLETE_STATUSES = _VALUES["complete_statuses"]
LOCALES = ("zh-TW", "en")

# Limits on free text, as the hub's (`crates/hub/src/wire/event.rs`).
MAX_STAGE_TEXT = 500
MAX_MESSAGE = 8 * 1024
MAX_URL = 2048
_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1
_PROJECT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: A tag, as the hub's grammar (`crates/hub/src/wire/tag.rs`): no `,` (the state joins them with
#: it) and no braces (a tag's index key keeps its own slot).
_TAG = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
#: Most tags one run carries.
MAX_TAGS = 8


class InvalidEvent(ValueError):
    """An argument breaks the contract; `field` names it as the hub does (`data.progress`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Event:
    """A validated, normalized event: `{"event": name, "data": data}`."""

    name: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"event": self.name, "data": self.data}


@dataclass(frozen=True)
class StateChange:
    """What the event changes in the project's state: a patch of the fields
    `contract/publish-inputs.json` names (`state_fields`; an empty value is null),
    written as given, and what the script's own bookkeeping needs (runs, progress)."""

    patch: tuple[tuple[str, str], ...] = ()
    #: Progress the state is raised to regardless of the frame (`complete` -> 100).
    progress_floor: int | None = None
    #: The event ends the run (`complete`).
    ends_run: bool = False
    #: The tags the event gives the run (`None`: it gives none); also written into each
    #: tag's index, `progress:{tag:<tag>}:projects`, after the script.
    tags: tuple[str, ...] | None = None

    def get(self, name: str) -> str | None:
        """The value the patch gives the field `name`, if it sets it."""
        return next((value for field, value in reversed(self.patch) if field == name), None)


@dataclass(frozen=True)
class Prepared:
    """The frame with two holes: `head + id + mid + ["progress":N] + tail`."""

    name: str
    head: str
    mid: str
    tail: str
    progress: int | None
    state: StateChange = field(default_factory=StateChange)


def now_iso8601() -> str:
    """The current time as the wire writes it: `2025-10-19T10:35:00.123Z`."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def new_trace_id() -> str:
    """16 hex digits, like the hub's trace ids and publish receipts."""
    return secrets.token_hex(8)


def check_project_id(project_id: object) -> str:
    if not isinstance(project_id, str):
        raise InvalidEvent("project_id", f"must be a string (got {type(project_id).__name__})")
    if not _PROJECT_ID.fullmatch(project_id):
        raise InvalidEvent("project_id", "must match ^[A-Za-z0-9_-]{1,64}$")
    return project_id


def check_tags(tags: object) -> tuple[str, ...]:
    """A run's tags: a list of at most MAX_TAGS strings of `A-Z a-z 0-9 _ - . : @`, 1 to
    64 each, none twice (as the hub checks them)."""
    if isinstance(tags, str) or not isinstance(tags, (list, tuple)):
        raise InvalidEvent("tags", "must be a list of strings")
    if len(tags) > MAX_TAGS:
        raise InvalidEvent("tags", f"at most {MAX_TAGS} tags")
    for tag in tags:
        if not isinstance(tag, str) or not _TAG.fullmatch(tag):
            raise InvalidEvent("tags", f"{tag!r} must match ^[A-Za-z0-9_.:@-]{{1,64}}$")
    if len(set(tags)) != len(tags):
        raise InvalidEvent("tags", "a tag is given twice")
    return tuple(tags)


def check_locale(locale: str) -> str:
    if locale.lower() in ("zh-tw", "zh_tw", "zh"):
        return "zh-TW"
    if locale.lower() in ("en", "en-us", "en_us"):
        return "en"
    raise ValueError(f"locale: unknown locale {locale!r}: use zh-TW or en")


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidEvent(name, f"must be one of {', '.join(allowed)} (got {value!r})")
    return value


def _int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent(name, f"must be an integer (got {value!r})")
    if not low <= value <= high:
        # A machine bound (u32, u64) is no range anyone thinks in: only the side crossed.
        if high < _U32_MAX:
            bound = f"between {low} and {high}"
        else:
            bound = f">= {low}" if value < low else f"<= {high}"
        raise InvalidEvent(name, f"must be {bound} (got {value})")
    return value


def _text(name: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidEvent(name, f"must be a string (got {type(value).__name__})")
    if len(value) > limit:
        raise InvalidEvent(name, f"at most {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidEvent(name, "must be valid Unicode text") from err
    return value


def progress_update(
    status: str,
    progress: int,
    current_stage: str,
    estimated_remaining: int | None,
    *,
    units_done: int | None = None,
    units_total: int | None = None,
) -> Event:
    """`units_done`/`units_total`: while the stage runs parallel units (ASSETS 37/120),
    both or neither, `units_done <= units_total`, `units_total >= 1`."""
    data: dict[str, Any] = {
        "status": _one_of("data.status", status, STAGES),
        "progress": _int("data.progress", progress, 0, 100),
        "current_stage": _text("data.current_stage", current_stage, MAX_STAGE_TEXT),
        "estimated_remaining": None
        if estimated_remaining is None
        else _int("data.estimated_remaining", estimated_remaining, 0, _U64_MAX),
        "timestamp": now_iso8601(),
    }
    if units_done is not None or units_total is not None:
        if units_total is None:
            raise InvalidEvent("data.units_total", "units_done is given with units_total")
        if units_done is None:
            raise InvalidEvent("data.units_done", "units_total is given with units_done")
        total = _int("data.units_total", units_total, 1, _U32_MAX)
        data["units_done"] = _int("data.units_done", units_done, 0, total)
        data["units_total"] = total
    return Event("progress_update", data)


def stage_change(previous_stage: str | None, current_stage: str, progress: int) -> Event:
    previous = (
        None
        if previous_stage is None
        else _one_of("data.previous_stage", previous_stage, PREVIOUS_STAGES)
    )
    data: dict[str, Any] = {
        "previous_stage": previous,
        "current_stage": _one_of("data.current_stage", current_stage, STAGES),
        "progress": _int("data.progress", progress, 0, 100),
        "timestamp": now_iso8601(),
    }
    return Event("stage_change", data)


def log(level: str, message: str) -> Event:
    data: dict[str, Any] = {
        "level": _one_of("data.level", level, LEVELS),
        "message": _text("data.message", message, MAX_MESSAGE),
        "timestamp": now_iso8601(),
    }
    return Event("log", data)


def error(
    error_code: str,
    error_message: str,
    stage: str,
    retry_count: int,
    max_retries: int,
    locale: str,
) -> Event:
    catalog = _contract.error_catalog()
    code = _one_of("data.error_code", error_code, tuple(catalog))
    retries = _int("data.max_retries", max_retries, 0, _U32_MAX)
    count = _int("data.retry_count", retry_count, 0, _U32_MAX)
    if count > retries + 1:
        raise InvalidEvent("data.retry_count", "retry_count cannot exceed max_retries + 1")
    entry = catalog[code]
    data: dict[str, Any] = {
        "error_code": code,
        "message": _text("data.message", error_message, MAX_MESSAGE),
        "stage": _one_of("data.stage", stage, STAGES),
        "retry_count": count,
        "max_retries": retries,
        "is_retryable": bool(entry["is_retryable"]),
        "details": {},
        "solutions": list(entry["locales"][locale]["solutions"]),
        "trace_id": new_trace_id(),
        "timestamp": now_iso8601(),
    }
    return Event("error", data)


def complete(status: str, youtube_url: str | None) -> Event:
    if youtube_url is not None:
        _text("data.youtube_url", youtube_url, MAX_URL)
        if not youtube_url.startswith("https://"):
            raise InvalidEvent("data.youtube_url", "must be an https:// URL")
    data: dict[str, Any] = {
        "status": _one_of("data.status", status, COMPLETE_STATUSES),
        "youtube_url": youtube_url,
        "timestamp": now_iso8601(),
    }
    return Event("complete", data)


def _dumps(value: Any) -> str:
    # serde_json's compact form with sorted keys (the hub's maps are BTreeMaps).
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def prepare(
    event: Event, project_id: str, locale: str, tags: tuple[str, ...] | None = None
) -> Prepared:
    """The frame template and state change of a normalized event (`Event::prepare`),
    giving the run `tags` when given (checked with `check_tags`)."""
    data = dict(event.data)
    progress: int | None = data.pop("progress", None)
    inner = _dumps(data)[1:]
    tail = "," if progress is not None and inner != "}" else ""
    tail += inner
    if event.name == "error":
        # The compatibility shape's top-level fields; its `error` object repeats `data`,
        # so it is not stored: the hub adds it on the way to clients.
        compat = {"type": "error", "project_id": project_id}
        tail += "," + _dumps(compat)[1:]
    else:
        tail += "}"
    return Prepared(
        name=event.name,
        head=f'{{"event":"{event.name}","id":"',
        mid='","data":{',
        tail=tail,
        progress=progress,
        state=_tagged(_state_change(event, locale), tags),
    )


def _tagged(state: StateChange, tags: tuple[str, ...] | None) -> StateChange:
    """The state change, giving the run `tags` (`StateChange::tag`)."""
    if tags is None:
        return state
    return replace(state, patch=(*state.patch, ("tags", ",".join(tags))), tags=tags)


_NO_UNITS = (("units_done", ""), ("units_total", ""))


def _state_change(event: Event, locale: str) -> StateChange:
    """As the hub's `state_change` (`crates/hub/src/publish/prepare.rs`)."""
    data = event.data
    labels = _contract.state_labels()[locale]
    updated_at = ("updated_at", str(data["timestamp"]))
    if event.name == "progress_update":
        eta = data["estimated_remaining"]
        units: tuple[tuple[str, str], ...] = ()
        if "units_done" in data:
            units = (
                ("units_done", str(data["units_done"])),
                ("units_total", str(data["units_total"])),
            )
        return StateChange(
            patch=(
                ("status", data["status"]),
                ("current_stage", data["current_stage"]),
                ("estimated_remaining", "" if eta is None else str(eta)),
                *units,
                updated_at,
            )
        )
    if event.name == "stage_change":
        stage = data["current_stage"]
        # A stage's units are cleared by a change to another stage (a run taking the
        # job over re-enters its stage and keeps them).
        same = data["previous_stage"] == stage
        return StateChange(
            patch=(
                ("status", stage),
                ("current_stage", labels["stage_change"][stage]),
                *(() if same else _NO_UNITS),
                updated_at,
            )
        )
    if event.name == "complete":
        status = data["status"]
        completed = status == "COMPLETED"
        url = data["youtube_url"]
        return StateChange(
            patch=(
                ("status", status),
                *((("youtube_url", url),) if url is not None else ()),
                ("estimated_remaining", "0" if completed else ""),
                ("current_stage", labels["complete"][status]),
                *_NO_UNITS,
                updated_at,
            ),
            progress_floor=100 if completed else None,
            ends_run=True,
        )
    return StateChange(patch=(updated_at,))
