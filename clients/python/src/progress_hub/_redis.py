"""Redis as the hub uses it: which node(s) (`redis://`, `redis+cluster://` or
`redis+sentinel://`, as `crates/hub/src/broker/redis/target.rs`), the data layout (as
`crates/hub/src/broker/redis/layout.rs`), and the call of the publish script, built in ONE place
(`script_call`) from its one description, `contract/publish-inputs.json`.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from . import _contract
from ._event import Prepared
from .config import Config

logger = logging.getLogger("progress_hub")
_EPOCH_ALPHABET = string.ascii_letters + string.digits
#: How long a job's claim counter lives (a job never runs longer).
CLAIM_COUNTER_TTL = 7 * 24 * 3600


@dataclass(frozen=True)
class Claim:
    """One run of a generation job: the job, and its fencing token, which grows with
    every run (retry or redelivery) of the job."""

    job: str
    token: int
    #: The unit of the job this run is (a Celery task id: one of a group's parallel
    #: tasks, or a chain's step): its token is compared with the unit's own newest, so
    #: a sibling's newer claim does not fence it out (`publish.lua`, "Units").
    unit: str | None = None
    #: On the one publish that counts the unit done: (N units of the stage, progress
    #: from, progress to); the script counts it once and computes the progress of k/N.
    done_of: tuple[int, int, int] | None = None


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
# The webhook outbox the hubs keep (`crates/hub/src/broker/redis/layout.rs`: OUTBOX_KEY).
OUTBOX_KEY = "progress-hub:webhooks"
# The runs under way, for the hubs' stall scan (`layout.rs`: RUNNING_KEY).
RUNNING_KEY = "progress-hub:running"


def claim_counter_key(job: str) -> str:
    """The counter a job's fencing tokens are drawn from (INCR: strictly growing)."""
    return f"progress:claims:{{{job}}}"


#: The state's fields that say whose run it is, whether it ended, and how far its
#: current stage's parallel units are (read by the Celery task base at a task's end).
RUN_FIELDS = (
    "fence_holder",
    "fence_ended",
    "units_done",
    "units_total",
    "status",
    "progress",
)


def new_epoch() -> str:
    """10 random alphanumerics, like the hub's (one read of randomness, not ten: the
    argument is passed with every publish though used only by a new history)."""
    return "".join(_EPOCH_ALPHABET[b % len(_EPOCH_ALPHABET)] for b in secrets.token_bytes(10))


#: The hubs' history policy (a hash: len, bytes, active_ttl_s, retention_s), which this
#: publisher follows: its own `history_*`, `active_ttl` and `retention` are used only while
#: no hub has announced one (as the hub's `broker/redis/history_policy.rs`).
HISTORY_POLICY_KEY = "progress-hub:history"
HISTORY_POLICY_FIELDS = ("len", "bytes", "active_ttl_s", "retention_s")
#: How often the policy is read again (the hubs write it as often).
HISTORY_POLICY_EVERY = 30.0


def follow_policy(own: Config, fields: list[Any]) -> Config | None:
    """`own` with the announced history policy (`fields`: HMGET of HISTORY_POLICY_FIELDS),
    or None when none is announced or it makes no sense (then `own` is used)."""
    try:
        length, size, active, retention = (int(f) for f in fields)
    except (TypeError, ValueError):
        return None
    if min(length, size, active, retention) < 1:
        logger.warning("the announced history policy %r is ignored: it keeps nothing", fields)
        return None
    return dataclasses.replace(
        own, history_len=length, history_bytes=size, active_ttl=active, retention=retention
    )


def fences_key(project: str) -> str:
    return f"progress:{{{project}}}:fences"


def units_key(project: str) -> str:
    """The current job's parallel units: unit -> its newest token (`publish.lua`)."""
    return f"progress:{{{project}}}:units"


def tag_index_key(tag: str) -> str:
    """The tag's index (`layout::tag_index_key`): project -> when (ms) it was tagged."""
    return f"progress:{{tag:{tag}}}:projects"


#: The reserved tag of every project (`wire::Tag::all`): its index lists every project's
#: runs; no run carries it.
ALL_TAG = "*"


def tag_index_writes(
    tags: tuple[str, ...] | None, config: Config, begun: bool
) -> list[tuple[str, int]]:
    """Each tag's index key and how long (s) it is kept, as the hub writes them; with
    `begun` (the publish began the project's history or a run: `publish.lua` says so),
    also the index of every project's runs."""
    keep = max(config.active_ttl, config.retention, 1) * 2
    every = (ALL_TAG,) if begun else ()
    return [(tag_index_key(tag), keep) for tag in (*(tags or ()), *every)]


def published(answer: Any) -> tuple[str, bool]:
    """`publish.lua`'s answer: the event id, and whether the publish began the project's
    history or a new run (`{id, 1}`; the id alone otherwise)."""
    event_id, begun = answer if isinstance(answer, list) else (answer, 0)
    if isinstance(event_id, bytes):
        event_id = event_id.decode()
    return str(event_id), int(begun) == 1


def write_tag_index(pipe: Any, key: str, project: str, keep: int) -> None:
    """Queues one tag index's write on `pipe` (`tag_index.rs`'s `add`): the project at
    now, the key's expiry, and for every project's index its entries older than `keep`
    dropped."""
    now_ms = int(time.time() * 1000)
    pipe.zadd(key, {project: now_ms})
    pipe.expire(key, keep)
    if key == tag_index_key(ALL_TAG):
        pipe.zremrangebyscore(key, "-inf", f"({now_ms - keep * 1000}")


def script_call(
    project: str,
    prepared: Prepared,
    receipt: str,
    claim: Claim | None,
    target: Target,
    config: Config,
    retry: bool = False,
) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of `publish.lua` for one publish, built from its one description,
    `contract/publish-inputs.json`: KEYS in the order it lists; ARGV the values of the
    inputs every publish gives in the order of their names, then how many of its
    `given_only` inputs follow and those, in the order it lists them, up to the last one
    given ('' for one before it with none); then the state patch as field/value pairs.
    `retry`: the publish is sent again after an attempt whose outcome is not known (only
    then is its receipt looked up)."""
    contract = _contract.publish_inputs()
    state = prepared.state
    done_of = None if claim is None or claim.unit is None else claim.done_of
    by_name = {
        "history": history_key(project),
        "state": state_key(project),
        "receipt": receipt_key(project, receipt),
        "fences": fences_key(project),
        "units": units_key(project),
        # The era is a key of another slot: never on a cluster.
        "era?": None if target.cluster else ERA_KEY,
        # The webhook outbox (a complete always goes in; bounded until a hub reads it): with era.
        "outbox?": None if target.cluster else OUTBOX_KEY,
        # The runs under way (the hubs' stall scan): with the outbox.
        "running?": None if target.cluster else RUNNING_KEY,
    }
    keys = [k for k in (by_name[key["name"]] for key in contract["keys"]) if k is not None]
    inputs: dict[str, str | None] = {
        "channel": target.channel(project),
        "publish": target.publish_command,
        "new_epoch": new_epoch(),
        "receipt": receipt,
        "keyed": None,  # the SDK's receipts are its own, for its retries
        "retry": "1" if retry else None,
        "max_len": str(config.history_len),
        "max_bytes": str(config.history_bytes),
        "active_ttl": str(max(config.active_ttl, 1)),
        "retention_ttl": str(max(config.retention, 1)),
        "head": prepared.head,
        "mid": prepared.mid,
        "tail": prepared.tail,
        "progress": None if prepared.progress is None else str(prepared.progress),
        "progress_floor": None if state.progress_floor is None else str(state.progress_floor),
        "starts_run": None,  # the SDK publishes no QUEUED update
        "ends_run": "1" if state.ends_run else None,
        "run_holder": None,
        "fence_holder": None if claim is None else claim.job,
        "fence_token": None if claim is None else str(claim.token),
        "fence_unit": None if claim is None else claim.unit,
        "unit_done": None if done_of is None else str(done_of[0]),
        "unit_progress": None if done_of is None else f"{done_of[1]} {done_of[2]}",
    }
    # A KeyError here: an input of the contract with no producer.
    values = {name: inputs[name] or "" for name in contract["inputs"]}
    patch = list(state.patch)
    if claim is not None and state.ends_run:
        patch.append(("job_id", claim.job))  # the state names the job the run completed
    return keys, script_argv(contract, values, [x for pair in patch for x in pair])


def script_argv(contract: dict[str, Any], values: dict[str, str], patch: list[str]) -> list[str]:
    """ARGV of a `publish.lua` described by `contract` (a revision's
    `contract/publish-inputs.json`): the values of the inputs not in its `given_only`, in
    the order of their names ('' for none); then, if it has `given_only`, how many of
    those follow and them, up to the last one given; then `patch` (field, value, ...)."""
    given_only: list[str] = contract.get("given_only", [])
    names = sorted(contract["inputs"])
    argv = [values.get(name, "") for name in names if name not in given_only]
    if given_only:
        given = [values.get(name, "") for name in given_only]
        while given and not given[-1]:
            given.pop()
        argv += [str(len(given)), *given]
    return argv + patch


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
    import redis.cluster
    import redis.sentinel

    return _client(target, config, redis, redis.cluster, redis.sentinel)


def async_client(target: Target, config: Config) -> Any:
    """A `redis.asyncio` client (`Redis` or `RedisCluster`), for one event loop."""
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.sentinel

    return _client(target, config, redis.asyncio, redis.asyncio.cluster, redis.asyncio.sentinel)


def _client(target: Target, config: Config, api: Any, cluster: Any, sentinel: Any) -> Any:
    """The client of `target`, built with redis-py's synchronous modules or their
    asyncio twins (`api`, `cluster`, `sentinel`): the same names take the same arguments."""
    if target.sentinel is not None:
        spec = target.sentinel
        sentinels = sentinel.Sentinel(
            list(spec.sentinels), sentinel_kwargs=_sentinel_kwargs(spec, config)
        )
        return sentinels.master_for(spec.master, **_master_kwargs(spec, config))
    if not target.cluster:
        return api.Redis.from_url(target.urls[0], **_client_kwargs(config))
    first = urlsplit(target.urls[0])
    nodes = [
        cluster.ClusterNode(urlsplit(u).hostname or "127.0.0.1", urlsplit(u).port or 6379)
        for u in target.urls
    ]
    return cluster.RedisCluster(
        startup_nodes=nodes,
        username=first.username,
        password=first.password,
        ssl=first.scheme == "rediss",
        **_client_kwargs(config),
    )
