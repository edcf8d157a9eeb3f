"""Configuration: from the environment, or `progress_hub.configure(...)`.

- `REDIS_URL` (default `redis://127.0.0.1:6379`): `redis://`, `rediss://`, a cluster
  `redis+cluster://h1:p1,h2:p2` (`rediss+cluster://` with TLS), or a Sentinel-managed
  primary `redis+sentinel://[user:pass@]h1:p1,h2:p2/<master>[/db]` (the sentinels' own
  credentials as `?sentinel_username=&sentinel_password=`).
- `HUB_URL`, `HUB_TOKEN`: when `HUB_URL` is set, publish over HTTP instead
  (`POST /api/v1/projects/{id}/events`).
- `HUB_LOCALE` (`zh-TW` or `en`), `HUB_HISTORY_LEN`, `HUB_HISTORY_BYTES`, `HUB_RETENTION`:
  as the hub's.
- `HUB_PUBLISH_TIMEOUT`, `HUB_PUBLISH_RETRY_FOR` (seconds): one command's timeout, and
  how long a publish rides out an outage.

Every value is checked when the `Config` is made (by `configure`, by the environment's
reading, or by hand): a wrong type or range is an `InvalidConfig` naming the setting (and
the environment variable it came from), not a `TypeError` at the next publish.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import _contract
from ._event import check_locale
from .errors import InvalidConfig

logger = logging.getLogger("progress_hub")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
#: The hub's publisher defaults (`contract/publisher-defaults.json`).
_HUB = _contract.publisher_defaults()


@dataclass(frozen=True)
class Config:
    """The publisher's settings (see the module's text for the environment's names).
    Raises `InvalidConfig` when a value has the wrong type or range."""

    redis_url: str = DEFAULT_REDIS_URL
    #: Set: HTTP mode (the hub validates, coalesces and publishes).
    hub_url: str | None = None
    token: str | None = None
    locale: str = "zh-TW"
    #: At most one `progress_update` per project per window (seconds).
    coalesce_window: float = _HUB["coalesce_window_ms"] / 1000
    #: How long a publish keeps retrying while Redis is unreachable (seconds).
    retry_for: float = 30.0
    #: One Redis command's timeout (seconds).
    command_timeout: float = 2.0
    #: Events kept per project, and key lifetimes (seconds): used only while no hub has
    #: announced its own in Redis (`progress-hub:history`); the hubs' is followed.
    history_len: int = _HUB["history_len"]
    #: Bytes of history kept per project (oldest trimmed beyond): as `history_len`.
    history_bytes: int = _HUB["history_bytes"]
    active_ttl: int = _HUB["active_ttl_s"]
    retention: int = _HUB["retention_s"]

    def __post_init__(self) -> None:
        for name in ("redis_url",):
            _text(name, getattr(self, name), optional=False)
        for name in ("hub_url", "token"):
            _text(name, getattr(self, name), optional=True)
        _redis_url(self.redis_url)
        _text("locale", self.locale, optional=False)
        try:
            # Frozen: the normalized spelling (`zh_tw` -> `zh-TW`) is set past the guard.
            object.__setattr__(self, "locale", check_locale(self.locale))
        except ValueError as err:
            raise InvalidConfig("locale", str(err).removeprefix("locale: ")) from None
        _seconds_setting("coalesce_window", self.coalesce_window, low=0.0)
        _seconds_setting("retry_for", self.retry_for, low=0.0)
        _seconds_setting("command_timeout", self.command_timeout, low=None)
        _whole("history_len", self.history_len, 1)
        _whole("history_bytes", self.history_bytes, 1)
        _whole("active_ttl", self.active_ttl, 1)
        _whole("retention", self.retention, 1)


def _text(name: str, value: object, *, optional: bool) -> None:
    if isinstance(value, str) or (optional and value is None):
        return
    kind = "a string or None" if optional else "a string"
    raise InvalidConfig(name, f"must be {kind} (got {value!r})")


def _redis_url(url: str) -> None:
    from ._redis import Target  # _redis reads Config: imported when first checked

    try:
        Target.parse(url)
    except ValueError as err:
        raise InvalidConfig("redis_url", str(err).removeprefix("redis_url: ")) from None


def _seconds_setting(name: str, value: object, *, low: float | None) -> None:
    """A number of seconds: >= `low`, or > 0 when `low` is None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidConfig(name, f"must be a number of seconds (got {value!r})")
    if low is None and not value > 0:
        raise InvalidConfig(name, f"must be > 0 (got {value!r})")
    if low is not None and not value >= low:
        raise InvalidConfig(name, f"must be >= {low:g} (got {value!r})")


def _whole(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidConfig(name, f"must be an integer (got {value!r})")
    if value < low:
        raise InvalidConfig(name, f"must be >= {low} (got {value!r})")


def redacted(url: str) -> str:
    """`url` with its passwords (the userinfo's, a `sentinel_password=`) as `***`."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        parts = parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hosts}")
    query = re.sub(r"((?:^|&)[^=&]*password=)[^&]*", r"\1***", parts.query)
    return urlunsplit(parts._replace(query=query))


#: Where this process was already said to publish to (said once each).
_announced: set[str] = set()
_announced_lock = threading.Lock()


def announce(config: Config) -> None:
    """Says once per process, at INFO, where publishes go (the default Redis URL may
    not be the Redis the rest of the application, or the hub, uses)."""
    if config.hub_url:
        where = f"the hub at {redacted(config.hub_url)} (HTTP mode)"
    else:
        where = f"Redis at {redacted(config.redis_url)}"
    with _announced_lock:
        if where in _announced:
            return
        _announced.add(where)
    logger.info("progress_hub publishes to %s", where)


def _duration(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*(s|m|h|d)?\s*", text)
    if not match:
        raise ValueError("not a duration (e.g. 24h, 90m, 3600)")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]
    return int(match.group(1)) * unit


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("not a number of seconds (e.g. 2.5)") from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("not a whole number") from None


#: The environment's variables: the setting each one sets, and how its text is read.
_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "REDIS_URL": ("redis_url", str),
    "HUB_URL": ("hub_url", str),
    "HUB_TOKEN": ("token", str),
    "HUB_LOCALE": ("locale", str),
    "HUB_HISTORY_LEN": ("history_len", _integer),
    "HUB_HISTORY_BYTES": ("history_bytes", _integer),
    "HUB_RETENTION": ("retention", _duration),
    "HUB_PUBLISH_TIMEOUT": ("command_timeout", _number),
    "HUB_PUBLISH_RETRY_FOR": ("retry_for", _number),
}


def from_env(environ: Mapping[str, str] | None = None) -> Config:
    """The configuration the environment gives (an empty variable counts as unset).
    Raises `InvalidConfig` naming the variable whose value is wrong."""
    env = os.environ if environ is None else environ
    given: dict[str, Any] = {}
    source: dict[str, str] = {}
    for variable, (setting, read) in _VARIABLES.items():
        text = env.get(variable)
        if not text:
            continue
        try:
            given[setting] = read(text)
        except ValueError as err:
            raise InvalidConfig(setting, str(err), variable=variable, value=text) from None
        source[setting] = variable
    try:
        return Config(**given)
    except InvalidConfig as err:
        named = source.get(err.setting)
        if named is None:
            raise
        raise InvalidConfig(err.setting, err.problem, variable=named, value=env[named]) from None
