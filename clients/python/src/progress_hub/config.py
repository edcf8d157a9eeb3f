"""Configuration: from the environment, or `progress_hub.configure(...)`.

- `REDIS_URL` (default `redis://127.0.0.1:6379`): `redis://`, `rediss://`, a cluster
  `redis+cluster://h1:p1,h2:p2` (`rediss+cluster://` with TLS), or a Sentinel-managed
  primary `redis+sentinel://[user:pass@]h1:p1,h2:p2/<master>[/db]` (the sentinels' own
  credentials as `?sentinel_username=&sentinel_password=`).
- `HUB_URL`, `HUB_TOKEN`: when `HUB_URL` is set, publish over HTTP instead
  (`POST /api/v1/projects/{id}/events`).
- `HUB_LOCALE` (`zh-TW` or `en`), `HUB_HISTORY_LEN`, `HUB_HISTORY_BYTES`, `HUB_RETENTION`:
  as the hub's.
- `HUB_PUBLISH_TIMEOUT`, `HUB_PUBLISH_RETRY_FOR`: one command's timeout, and how long a
  publish rides out an outage.

A duration (`HUB_RETENTION`, `HUB_PUBLISH_*`) is written as the hub reads its own
(`7d`, `1h 30m`, `90s`, `500ms`), or as a plain number of seconds.

Every value is checked when the `Config` is made (by `configure`, by the environment's
reading, or by hand): a wrong type or range is an `InvalidConfig` naming the setting (and
the environment variable it came from), not a `TypeError` at the next publish.
"""

from __future__ import annotations

import logging
import math
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
        _seconds_setting("coalesce_window", self.coalesce_window, low=0.0, high=_HOUR)
        _seconds_setting("retry_for", self.retry_for, low=0.0, high=_WEEK)
        _seconds_setting("command_timeout", self.command_timeout, low=None, high=_HOUR)
        _whole("history_len", self.history_len, 1, 10**9)
        _whole("history_bytes", self.history_bytes, 1, 2**40)
        _whole("active_ttl", self.active_ttl, 1, _TEN_YEARS)
        _whole("retention", self.retention, 1, _TEN_YEARS)
        if self.hub_url is not None:
            _hub_url(self.hub_url)


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


def _hub_url(url: str) -> None:
    """An http(s) URL naming a host: the base the HTTP API's paths are appended to."""
    if any(c.isspace() for c in url):
        raise InvalidConfig("hub_url", f"must not contain whitespace (got {url!r})")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise InvalidConfig("hub_url", f"port: {err} (got {url!r})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidConfig(
            "hub_url",
            f"must be an http:// or https:// URL, e.g. http://127.0.0.1:8080 (got {url!r})",
        )
    if not parts.hostname:
        raise InvalidConfig("hub_url", f"names no host (got {url!r})")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise InvalidConfig("hub_url", f"must have no query or fragment (got {url!r})")
    del port  # read for its check only


#: Upper bounds of the settings: far beyond any real use, and within what a socket
#: timeout, a Redis EXPIRE and a float deadline can hold (an absurd value is a typo).
_HOUR = 3600.0
_WEEK = 7 * 86400.0
_TEN_YEARS = 10 * 365 * 86400


def _seconds_setting(name: str, value: object, *, low: float | None, high: float) -> None:
    """A finite number of seconds: >= `low` (> 0 when `low` is None), <= `high`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidConfig(name, f"must be a number of seconds (got {value!r})")
    if not math.isfinite(value):
        raise InvalidConfig(name, f"must be a finite number of seconds (got {value!r})")
    if value > high:
        raise InvalidConfig(name, f"must be <= {high:g} s (got {value!r})")
    if low is None and not value > 0:
        raise InvalidConfig(name, f"must be > 0 (got {value!r})")
    if low is not None and not value >= low:
        raise InvalidConfig(name, f"must be >= {low:g} (got {value!r})")


def _whole(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidConfig(name, f"must be an integer (got {value!r})")
    if value < low:
        raise InvalidConfig(name, f"must be >= {low} (got {value!r})")
    if value > high:
        raise InvalidConfig(name, f"must be <= {high} (got {value!r})")


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


#: The units of the hub's durations (humantime's, as `--retention 7d` reads them), in
#: seconds; `M` is a month of 30.44 days, `y` a year of 365.25 days.
_UNITS = {
    **dict.fromkeys(("nanos", "nsec", "ns"), 1e-9),
    **dict.fromkeys(("usec", "us", "µs"), 1e-6),
    **dict.fromkeys(("millis", "msec", "ms"), 1e-3),
    **dict.fromkeys(("seconds", "second", "secs", "sec", "s"), 1.0),
    **dict.fromkeys(("minutes", "minute", "min", "mins", "m"), 60.0),
    **dict.fromkeys(("hours", "hour", "hr", "hrs", "h"), 3600.0),
    **dict.fromkeys(("days", "day", "d"), 86400.0),
    **dict.fromkeys(("weeks", "week", "wk", "wks", "w"), 604800.0),
    **dict.fromkeys(("months", "month", "M"), 2_630_016.0),
    **dict.fromkeys(("years", "year", "y"), 31_557_600.0),
}
_PIECE = re.compile(r"\s*(\d+)(?:\.(\d+))?\s*([A-Za-zµ]+)\s*")


def _seconds(text: str) -> float:
    """A duration as the hub reads one (`7d`, `1h 30m`, `90s`, `1.5h`, `500ms`), or a
    plain number of seconds (`2.5`)."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise ValueError("not a finite number of seconds >= 0")
        return value
    total, at = 0.0, 0
    while at < len(text) or at == 0:
        piece = _PIECE.match(text, at)
        if piece is None or piece.group(3) not in _UNITS:
            raise ValueError("not a duration (e.g. 7d, 1h 30m, 90s, 2.5)")
        number = float(f"{piece.group(1)}.{piece.group(2) or 0}")
        total += number * _UNITS[piece.group(3)]
        at = piece.end()
    if not math.isfinite(total) or total > _TEN_YEARS:
        raise ValueError("too long a duration (at most 10 years)")
    return total


def _whole_seconds(text: str) -> int:
    return int(_seconds(text))


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
    "HUB_RETENTION": ("retention", _whole_seconds),
    "HUB_PUBLISH_TIMEOUT": ("command_timeout", _seconds),
    "HUB_PUBLISH_RETRY_FOR": ("retry_for", _seconds),
}


def from_env(
    environ: Mapping[str, str] | None = None, *, overrides: Mapping[str, Any] | None = None
) -> Config:
    """The configuration the environment gives (an empty variable counts as unset), with
    `overrides` (settings given to `configure`) over it: the variable of an overridden
    setting is not read, so a bad one does not stand in the way of its replacement.
    Raises `InvalidConfig` naming the variable whose value is wrong."""
    env = os.environ if environ is None else environ
    given: dict[str, Any] = {}
    source: dict[str, str] = {}
    for variable, (setting, read) in _VARIABLES.items():
        text = env.get(variable)
        if not text or (overrides and setting in overrides):
            continue
        try:
            given[setting] = read(text)
        except ValueError as err:
            raise InvalidConfig(setting, str(err), variable=variable, value=text) from None
        source[setting] = variable
    try:
        return Config(**given, **(overrides or {}))
    except InvalidConfig as err:
        named = source.get(err.setting)
        if named is None:
            raise
        raise InvalidConfig(err.setting, err.problem, variable=named, value=env[named]) from None
