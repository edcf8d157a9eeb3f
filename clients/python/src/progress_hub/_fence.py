"""The fence rule of `publish.lua` (`crates/hub/src/broker/redis/publish.lua`, "Fences"), read-only:
whether the next publish under a claim would be accepted, from the fields the script
reads for it, read in one atomic round trip (`reads`, then `accepts`).

The script, for an event under the fence `{holder, token}`, refuses it STALE when
- the holder's run has ended (`fence_ended` is the holder), or
- the holder is the state's `fence_holder` and a newer token of it has published
  (`fence_token` > token) or, for a claim of a unit, a newer token of that unit (the
  `units` hash: a sibling's newer claim does not count), or
- the holder is not the state's `fence_holder` but the project has seen it before
  (it is in the project's `fences` set): a later job took the project;
and a state with no epoch, or without its history, counts as new (its fence fields
forgotten; the `fences` set is kept). `tests/test_claim.py` checks every case against
the script's verdict on the publish itself.
"""

from __future__ import annotations

from typing import Any

from ._redis import Claim, fences_key, history_key, state_key, units_key

#: The state fields the script reads for a fence, in this order.
STATE_FIELDS = ("epoch", "fence_ended", "fence_holder", "fence_token")


def reads(pipe: Any, project: str, claim: Claim) -> None:
    """Queues the reads the rule needs on `pipe` (a MULTI pipeline: one slot, since
    every key of a project shares its hash tag)."""
    pipe.hmget(state_key(project), STATE_FIELDS)
    pipe.exists(history_key(project))
    pipe.sismember(fences_key(project), claim.job)
    pipe.hget(units_key(project), claim.unit or "")


def accepts(replies: list[Any], claim: Claim) -> bool:
    """Whether the script would accept a publish under `claim`, given the replies of
    `reads`."""
    (epoch, ended, holder, token), history, seen, unit = replies
    if epoch is None or not history:
        ended, holder, token = None, None, None  # a new history: the script's reset
    if ended == claim.job:
        return False
    if holder == claim.job:
        if claim.unit is not None:
            return claim.token >= int((unit or "0").split(" ")[0])
        return claim.token >= int(token or 0)
    return not seen
