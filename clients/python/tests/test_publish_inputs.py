"""The SDK calls `publish.lua` as its one description, `contract/publish-inputs.json`,
says: KEYS in its order, ARGV the values of the inputs every publish gives in the order
of their names, then how many `given_only` inputs follow and those in its order, then
the state patch as field/value pairs with only the fields it names (tests/contract.rs
checks the script and the hub's builder against the same file)."""

from __future__ import annotations

import re

import pytest
from conftest import REPO, RedisServer

from progress_hub import _contract, _event, _redis
from progress_hub._redis import Claim, Target, script_call
from progress_hub.config import Config

CONTRACT = _contract.publish_inputs()
NAMES = sorted(CONTRACT["inputs"])
GIVEN_ONLY: list[str] = CONTRACT["given_only"]
ALWAYS = [name for name in NAMES if name not in GIVEN_ONLY]


def named(argv: list[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The inputs a call gives a value (by name) and its state patch."""
    values, count = argv[: len(ALWAYS)], int(argv[len(ALWAYS)])
    assert 0 <= count <= len(GIVEN_ONLY)
    optional = argv[len(ALWAYS) + 1 : len(ALWAYS) + 1 + count]
    assert count == 0 or optional[-1] != "", "given up to the last one with a value"
    patch = argv[len(ALWAYS) + 1 + count :]
    assert len(patch) % 2 == 0, "field/value pairs"
    pairs = [*zip(ALWAYS, values, strict=True), *zip(GIVEN_ONLY, optional, strict=False)]
    given = {name: value for name, value in pairs if value != ""}
    return given, list(zip(patch[::2], patch[1::2], strict=True))


def test_the_call_names_only_described_inputs_and_fields() -> None:
    events = [
        _event.progress_update("RENDERING", 40, "x", 10),
        _event.stage_change(None, "RENDERING", 5),
        _event.log("INFO", "m"),
        _event.complete("COMPLETED", "https://youtube.com/watch?v=1"),
    ]
    inputs: set[str] = set()
    fields: set[str] = set()
    for i, event in enumerate(events):
        # Any event may give the run its tags (here the first).
        prepared = _event.prepare(event, "p", "en", ("user:7",) if i == 0 else None)
        # A unit's claim (the first event counts the unit done).
        claim = Claim("job", 3, unit="task-1", done_of=(4, 30, 60) if i == 0 else None)
        target, retry = Target.parse("redis://x"), i == 1  # (a resend: the second)
        keys, argv = script_call("p", prepared, "r", claim, target, Config(), retry)
        assert len(keys) == len(CONTRACT["keys"])
        given, patch = named(argv)
        inputs.update(given)
        fields.update(field for field, _ in patch)
    # What the SDK never sends: it publishes no QUEUED update (that starts a run, in a
    # place in the queue), and its receipts are its own (for its retries), never a
    # caller's idempotency key.
    assert fields == set(CONTRACT["state_fields"]) - {"queue_position"}
    assert inputs == set(CONTRACT["inputs"]) - {"starts_run", "run_holder", "keyed"}


def test_the_script_reads_the_described_inputs() -> None:
    script = _contract.publish_script()
    taken = re.search(r"\nlocal ([a-z_,\s]+) = unpack\(ARGV, 1, (\d+)\)", script)
    assert taken is not None
    assert [name.strip() for name in taken[1].split(",")] == [*ALWAYS, "given"]
    assert int(taken[2]) == len(ALWAYS) + 1
    start = len(ALWAYS) + 2
    given = rf"\nlocal ([a-z_,\s]+) = unpack\(ARGV, {start}, {start - 1} \+ given\)"
    rest = re.search(given, script)
    assert rest is not None
    assert [name.strip() for name in rest[1].split(",")] == GIVEN_ONLY
    assert f"local PATCH_AT = {start} + given\n" in script
    assert (REPO / "contract/publish-inputs.json").read_text(encoding="utf-8") == (
        _contract.read_text("publish-inputs.json")
    )


def test_a_cluster_call_leaves_out_the_one_node_keys() -> None:
    # The era, the webhook outbox and the runs under way are keys of other slots: never
    # on a cluster.
    prepared = _event.prepare(_event.log("INFO", "m"), "p", "en")
    keys, _ = script_call("p", prepared, "r", None, Target.parse("redis+cluster://a:1"), Config())
    assert len(keys) == len(CONTRACT["keys"]) - 3
    assert all("{p}" in key for key in keys)


def publish(
    redis_server: RedisServer, project: str, receipt: str, message: str, retry: bool = False
) -> str:
    """One run of the publish script, as the SDK calls it, with this receipt (sent again
    after a lost answer: `retry`)."""
    prepared = _event.prepare(_event.log("INFO", message), project, "en")
    target = Target.parse(redis_server.url)
    keys, argv = script_call(project, prepared, receipt, None, target, Config(), retry)
    answer = redis_server.client().eval(_contract.publish_script(), len(keys), *keys, *argv)
    return _redis.published(answer)[0]


def test_a_retried_publish_appends_once_and_leaves_no_key(redis_server: RedisServer) -> None:
    # A publisher's own receipts (not a caller's idempotency key) are remembered in the
    # project's state: a retry after a few other publishes still gets its first id.
    first = publish(redis_server, "retried", "r-first", "one")
    others = [publish(redis_server, "retried", f"r-{i}", f"other {i}") for i in range(9)]
    assert publish(redis_server, "retried", "r-first", "one", retry=True) == first
    # an id is no receipt
    assert publish(redis_server, "retried", others[3], "x", retry=True) != others[3]
    assert publish(redis_server, "retried", "r-3", "other 3", retry=True) == others[3]
    messages = [f["data"]["message"] for f in redis_server.history("retried")]
    assert messages == ["one", *(f"other {i}" for i in range(9)), "x"]
    assert redis_server.client().keys("progress:{retried}:pub:*") == []


def test_receipts_are_looked_up_on_a_retry_among_the_last_ten_publishes(
    redis_server: RedisServer,
) -> None:
    # The contract: the last publish's receipt is checked on every publish (a call the
    # Redis client library sends again by itself); a retry the publisher marks looks
    # among the project's last 10 publishes (others may publish meanwhile); a first
    # attempt is looked up no further (it cannot have been done before).
    first = publish(redis_server, "ring", "r-first", "one")
    assert publish(redis_server, "ring", "r-first", "one") == first  # resent by the library
    others = [publish(redis_server, "ring", f"r-{i}", f"other {i}") for i in range(10)]
    assert publish(redis_server, "ring", "r-0", "other 0", retry=True) == others[0]
    assert publish(redis_server, "ring", "r-1", "other 1 again") not in (first, *others)
    late = publish(redis_server, "ring", "r-first", "one", retry=True)
    assert late not in (first, *others)
    messages = [f["data"]["message"] for f in redis_server.history("ring")]
    assert messages == ["one", *(f"other {i}" for i in range(10)), "other 1 again", "one"]


def test_the_keys_expire_however_many_publishes_skip_setting_it(
    redis_server: RedisServer,
) -> None:
    for i in range(5):
        publish(redis_server, "expiring", f"r{i}", f"m{i}")
    client = redis_server.client()
    active = Config().active_ttl
    # At least `active_ttl` after the last event, at most an eighth longer.
    for key in ("progress:{expiring}:history", "progress:{expiring}:state"):
        assert active <= client.ttl(key) <= active + active // 8 + 1, key


def test_a_one_node_call_passes_the_era_then_the_outbox() -> None:
    prepared = _event.prepare(_event.log("INFO", "m"), "p", "en")
    keys, _ = script_call("p", prepared, "r", None, Target.parse("redis://a:1"), Config())
    assert keys[-3:] == ["progress:era", "progress-hub:webhooks", "progress-hub:running"]


def test_a_count_of_parallel_units_is_patched_and_another_stage_clears_it() -> None:
    # As the hub's state_change: units_done/units_total while a stage runs parallel
    # units; a stage_change to another stage and the complete clear them ('' is null);
    # a run taking the job over re-enters its stage and keeps them.
    def patch(event: _event.Event) -> dict[str, str]:
        return dict(_event.prepare(event, "p", "en").state.patch)

    counted = patch(
        _event.progress_update("ASSETS_GENERATING", 40, "x", None, units_done=7, units_total=17)
    )
    assert (counted["units_done"], counted["units_total"]) == ("7", "17")
    assert "units_done" not in patch(_event.progress_update("ASSETS_GENERATING", 41, "x", None))
    moved = patch(_event.stage_change("ASSETS_GENERATING", "RENDERING", 60))
    assert (moved["units_done"], moved["units_total"]) == ("", "")
    assert "units_done" not in patch(
        _event.stage_change("ASSETS_GENERATING", "ASSETS_GENERATING", 41)
    )
    ended = patch(_event.complete("CANCELLED", None))
    assert (ended["units_done"], ended["units_total"]) == ("", "")
    for done, total, field in [
        (3, 2, "data.units_done"),
        (-1, 2, "data.units_done"),
        (1, 0, "data.units_total"),
        (1, None, "data.units_total"),
        (None, 2, "data.units_done"),
        (1, 2**32, "data.units_total"),
    ]:
        with pytest.raises(_event.InvalidEvent) as caught:
            _event.progress_update(
                "ASSETS_GENERATING", 40, "x", None, units_done=done, units_total=total
            )
        assert caught.value.field == field, (done, total)
