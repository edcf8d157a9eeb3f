"""Redis as the hub uses it: which node(s) (`redis://`, `redis+cluster://` or
`redis+sentinel://`, as `src/broker/redis/target.rs`), the data layout (as
`src/broker/redis/layout.rs`), and the arguments of the publish script, computed in
ONE place (`script_call`), in the order `publish.lua` documents them at its top.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ._event import Prepared
from .config import Config

_EPOCH_ALPHABET = string.ascii_letters + string.digits
#: How long a job's claim counter lives (a job never runs longer).
CLAIM_COUNTER_TTL = 7 * 24 * 3600


@dataclass(frozen=True)
class Claim:
    """One run of a generation job: the job, and its fencing token, which grows with
    every run (retry or redelivery) of the job."""

    job: str
    token: int


@dataclass(frozen=True)
class SentinelSpec:
    """`redis+sentinel://[user:pass@]h1:p1,h2:p2/<master>[/db]`, optionally with
    `?sentinel_username=&sentinel_password=`: the userinfo and db are the data nodes',
    the query parameters the sentinels' own (as the hub reads it)."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    @staticmethod
    def parse(rest: str) -> SentinelSpec:
        bad = f"redis_url: redis+sentinel://h1:p1,h2:p2/<master>[/db] expected, not {rest!r}"
        rest, _, query = rest.partition("?")
        userinfo, at, hosts_path = rest.rpartition("@")
        hosts, _, path = hosts_path.partition("/")
        parts = [p for p in path.split("/") if p]
        if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise ValueError(bad)
        sentinels = []
        for host in (h.strip() for h in hosts.split(",")):
            if not host:
                continue
            name, _, port = host.rpartition(":")
            if not name or not port.isdigit():
                raise ValueError(bad)
            sentinels.append((name, int(port)))
        if not sentinels:
            raise ValueError(bad)
        user, _, password = userinfo.partition(":") if at else ("", "", "")
        params = dict(parse_qsl(query))
        return SentinelSpec(
            sentinels=tuple(sentinels),
            master=parts[0],
            db=int(parts[1]) if len(parts) == 2 else 0,
            username=unquote(user) or None,
            password=unquote(password) or None,
            sentinel_username=params.get("sentinel_username"),
            sentinel_password=params.get("sentinel_password"),
        )


@dataclass(frozen=True)
class Target:
    """One node (its URL), a cluster (its seed node URLs), or a Sentinel-managed
    primary (found through its sentinels on every new connection)."""

    urls: tuple[str, ...]
    cluster: bool
    sentinel: SentinelSpec | None = None

    @staticmethod
    def parse(url: str) -> Target:
        scheme, sep, rest = url.partition("://")
        if sep and scheme == "redis+sentinel":
            return Target((), cluster=False, sentinel=SentinelSpec.parse(rest))
        if sep and scheme == "rediss+sentinel":
            raise ValueError("redis_url: rediss+sentinel:// is not supported (nor by the hub)")
        if not sep or scheme not in ("redis+cluster", "rediss+cluster"):
            return Target((url,), cluster=False)
        base = scheme.removesuffix("+cluster")
        userinfo, at, hosts = rest.rpartition("@")
        cut = min((i for i in (hosts.find("/"), hosts.find("?")) if i >= 0), default=len(hosts))
        hosts, tail = hosts[:cut], hosts[cut:]
        prefix = f"{base}://{userinfo}@" if at else f"{base}://"
        seeds = tuple(prefix + h.strip() + tail for h in hosts.split(",") if h.strip())
        if not seeds:
            raise ValueError(f"redis_url: no seed node in the cluster URL {url!r}")
        return Target(seeds, cluster=True)

    def channel(self, project: str) -> str:
        """`progress:<id>` on one node (the legacy channel), `progress:{<id>}` on a cluster."""
        return f"progress:{{{project}}}" if self.cluster else f"progress:{project}"

    @property
    def publish_command(self) -> str:
        return "SPUBLISH" if self.cluster else "PUBLISH"


# The data layout: every key of a project shares the hash tag {project}.
def history_key(project: str) -> str:
    return f"progress:{{{project}}}:history"


def state_key(project: str) -> str:
    return f"progress:{{{project}}}:state"


def receipt_key(project: str, receipt: str) -> str:
    return f"progress:{{{project}}}:pub:{receipt}"


# The node's era (one node): the run_id of the Redis incarnation the hubs last found
# running. Passed to `publish.lua`, which begins a new epoch for a state written under
# another (a restart from an older save), so no id repeats (see the hub's era.rs).
ERA_KEY = "progress:era"


def claim_counter_key(job: str) -> str:
    """The counter a job's fencing tokens are drawn from (INCR: strictly growing)."""
    return f"progress:claims:{{{job}}}"


def new_epoch() -> str:
    """10 random alphanumerics, like the hub's (one read of randomness, not ten: the
    argument is passed with every publish though used only by a new history)."""
    return "".join(_EPOCH_ALPHABET[b % len(_EPOCH_ALPHABET)] for b in secrets.token_bytes(10))


def _change(value: str | None) -> str:
    """`''` leaves a state field unchanged; `'=' .. value` sets it (empty value: null)."""
    return "" if value is None else "=" + value


def script_call(
    project: str,
    prepared: Prepared,
    receipt: str,
    claim: Claim | None,
    target: Target,
    config: Config,
) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of `publish.lua` for one publish (see the script's header)."""
    state = prepared.state
    eta = state.estimated_remaining
    keys = [history_key(project), state_key(project), receipt_key(project, receipt)]
    if not target.cluster:
        keys.append(ERA_KEY)  # a key of another slot: never on a cluster
    argv = [
        target.channel(project),  # 1 channel
        new_epoch(),  # 2 epoch of a new history
        str(config.history_len),  # 3 MAXLEN
        str(max(config.active_ttl, 1)),  # 4 TTL while the job runs
        str(max(config.retention, 1)),  # 5 TTL after `complete`
        prepared.name,  # 6 event name
        prepared.head,  # 7 frame template: head
        prepared.mid,  # 8 mid
        prepared.tail,  # 9 tail
        "" if prepared.progress is None else str(prepared.progress),  # 10 progress asked for
        "" if state.progress_floor is None else str(state.progress_floor),  # 11 progress floor
        _change(state.status),  # 12 status
        _change(state.current_stage),  # 13 current_stage
        "" if eta is None else "=" + ("" if eta[0] is None else str(eta[0])),  # 14 ETA
        _change(state.youtube_url),  # 15 youtube_url
        state.updated_at,  # 16 updated_at
        "" if claim is None else claim.job,  # 17 job
        target.publish_command,  # 18 PUBLISH or SPUBLISH
        "" if claim is None else str(claim.token),  # 19 the claim's fencing token
        str(config.history_bytes),  # 20 bytes of history kept
    ]
    return keys, argv


def _client_kwargs(config: Config) -> dict[str, Any]:
    return {
        "decode_responses": True,
        "socket_timeout": config.command_timeout,
        "socket_connect_timeout": config.command_timeout,
    }


def _sentinel_kwargs(spec: SentinelSpec, config: Config) -> dict[str, Any]:
    """The sentinels' own connection settings (credentials, timeouts)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": config.command_timeout,
        "socket_connect_timeout": config.command_timeout,
    }
    if spec.sentinel_username:
        kwargs["username"] = spec.sentinel_username
    if spec.sentinel_password:
        kwargs["password"] = spec.sentinel_password
    return kwargs


def _master_kwargs(spec: SentinelSpec, config: Config) -> dict[str, Any]:
    """The primary's connection settings. redis-py's Sentinel pool asks the sentinels
    for the primary on every new connection, and drops a connection whose node answers
    READONLY (a demoted primary) with a ConnectionError, which the publish retries."""
    return {
        "db": spec.db,
        "username": spec.username,
        "password": spec.password,
        **_client_kwargs(config),
    }


def follow_primary(client: Any) -> None:
    """Behind Sentinel: asks the sentinels for the primary before a publish, so that a
    switch drops the pool's idle connections to the old one (which may take writes,
    to be lost, until the sentinels demote it). One round trip to a sentinel; a no-op
    on any other client."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None and hasattr(pool, "get_master_address"):
        pool.get_master_address()


async def follow_primary_async(client: Any) -> None:
    """As [`follow_primary`], for a `redis.asyncio` client."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None and hasattr(pool, "get_master_address"):
        await pool.get_master_address()


def sync_client(target: Target, config: Config) -> Any:
    """A redis-py client (`Redis` or `RedisCluster`) for this process."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    if target.sentinel is not None:
        from redis.sentinel import Sentinel

        spec = target.sentinel
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(spec.sentinels), sentinel_kwargs=_sentinel_kwargs(spec, config)
        )
        return sentinel.master_for(  # type: ignore[no-untyped-call]
            spec.master, **_master_kwargs(spec, config)
        )
    if not target.cluster:
        return redis.Redis.from_url(target.urls[0], **_client_kwargs(config))
    first = urlsplit(target.urls[0])
    nodes = [
        ClusterNode(urlsplit(u).hostname or "127.0.0.1", urlsplit(u).port or 6379)  # type: ignore[no-untyped-call]
        for u in target.urls
    ]
    return RedisCluster(
        startup_nodes=nodes,
        username=first.username,
        password=first.password,
        ssl=first.scheme == "rediss",
        **_client_kwargs(config),
    )


def async_client(target: Target, config: Config) -> Any:
    """A `redis.asyncio` client (`Redis` or `RedisCluster`), for one event loop."""
    from redis.asyncio import Redis
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    if target.sentinel is not None:
        from redis.asyncio.sentinel import Sentinel

        spec = target.sentinel
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(spec.sentinels), sentinel_kwargs=_sentinel_kwargs(spec, config)
        )
        return sentinel.master_for(spec.master, **_master_kwargs(spec, config))
    if not target.cluster:
        return Redis.from_url(target.urls[0], **_client_kwargs(config))
    first = urlsplit(target.urls[0])
    nodes = [
        ClusterNode(urlsplit(u).hostname or "127.0.0.1", urlsplit(u).port or 6379)
        for u in target.urls
    ]
    return RedisCluster(
        startup_nodes=nodes,
        username=first.username,
        password=first.password,
        ssl=first.scheme == "rediss",
        **_client_kwargs(config),
    )
