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
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any

from . import _contract
from ._event import check_locale

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
#: The hub's publisher defaults (`contract/publisher-defaults.json`).
_HUB = _contract.publisher_defaults()


@dataclass(frozen=True)
class Config:
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
    #: Events kept per project, and key lifetimes (seconds): keep equal to the hub's.
    history_len: int = _HUB["history_len"]
    #: Bytes of history kept per project (oldest trimmed beyond): keep equal to the hub's.
    history_bytes: int = _HUB["history_bytes"]
    active_ttl: int = _HUB["active_ttl_s"]
    retention: int = _HUB["retention_s"]


def _seconds(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*(s|m|h|d)?\s*", text)
    if not match:
        raise ValueError(f"HUB_RETENTION: not a duration: {text!r} (e.g. 24h, 90m, 3600)")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]
    return int(match.group(1)) * unit


def from_env(environ: Any = None) -> Config:
    env = os.environ if environ is None else environ
    config = Config(
        redis_url=env.get("REDIS_URL") or DEFAULT_REDIS_URL,
        hub_url=env.get("HUB_URL") or None,
        token=env.get("HUB_TOKEN") or None,
        locale=check_locale(env.get("HUB_LOCALE") or "zh-TW"),
    )
    if env.get("HUB_HISTORY_LEN"):
        config = replace(config, history_len=int(env["HUB_HISTORY_LEN"]))
    if env.get("HUB_HISTORY_BYTES"):
        config = replace(config, history_bytes=int(env["HUB_HISTORY_BYTES"]))
    if env.get("HUB_RETENTION"):
        config = replace(config, retention=_seconds(env["HUB_RETENTION"]))
    if env.get("HUB_PUBLISH_TIMEOUT"):
        config = replace(config, command_timeout=float(env["HUB_PUBLISH_TIMEOUT"]))
    if env.get("HUB_PUBLISH_RETRY_FOR"):
        config = replace(config, retry_for=float(env["HUB_PUBLISH_RETRY_FOR"]))
    return config
