"""`claim_is_current` against a real Redis and hub: it answers what `publish.lua` would
do with the claim's next publish (accepted: True; refused STALE: False), so every case
below ends by making that publish and checking the answer against it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import pytest
from conftest import Hub, RedisCluster, RedisServer, new_project

import progress_hub
from progress_hub import ProgressService, StaleClaim, _run, _sync
from progress_hub import aio as progress_aio
from progress_hub._redis import Claim


def claim(job: str) -> Claim:
    drawn = _sync.publisher().next_claim(job)
    assert drawn is not None
    return drawn


def under(fence: Claim, call: Callable[[], object]) -> None:
    token = _run.current_run.set(_run.Run(fence))
    try:
        call()
    finally:
        _run.current_run.reset(token)


def log(project: str, fence: Claim, message: str = "step") -> None:
    under(fence, lambda: ProgressService.publish_log(project, "INFO", message))


def complete(project: str, fence: Claim) -> None:
    under(fence, lambda: ProgressService.publish_complete(project, "COMPLETED", "https://y/1"))


def next_publish_accepted(project: str, fence: Claim) -> bool:
    try:
        log(project, fence, "next")
    except StaleClaim:
        return False
    return True


def check(project: str, fence: Claim, expected: bool) -> None:
    """`claim_is_current` says `expected`, and the script's verdict on the next publish
    under the claim is the same."""
    answered = _sync.publisher().claim_is_current(project, fence)
    assert answered is expected
    assert next_publish_accepted(project, fence) is expected, "claim_is_current disagrees"


@pytest.mark.parametrize("later_completes", [True, False])
def test_stale_after_a_later_job_took_the_project(hub: Hub, later_completes: bool) -> None:
    project = new_project()
    first = claim(f"j1-{project}")
    log(project, first)
    later = claim(f"j2-{project}")
    log(project, later)
    if later_completes:
        complete(project, later)
    check(project, first, False)


@pytest.mark.parametrize("newer_published", [True, False])
def test_a_newer_claim_of_the_same_job_supersedes_once_it_published(
    hub: Hub, newer_published: bool
) -> None:
    project, job = new_project(), f"j-{new_project()}"
    old = claim(job)
    log(project, old)
    new = claim(job)  # drawn; the script knows of it only once it published
    if newer_published:
        log(project, new)
    check(project, old, not newer_published)


def unit_of(fence: Claim, unit: str) -> Claim:
    return dataclasses.replace(fence, unit=unit)


def test_a_jobs_parallel_units_do_not_fence_each_other_out(hub: Hub) -> None:
    """Issue 25 §1: four tasks of one job's group, claimed in order, the newest
    publishing first: none refused; a redelivered unit fences only its first attempt."""
    project, job = new_project(), f"j-{new_project()}"
    units = [unit_of(claim(job), f"asset-{i}") for i in range(4)]
    log(project, units[3])
    for fence in units[:3]:
        check(project, fence, True)
    again = unit_of(claim(job), "asset-0")  # redelivered: a newer claim of the same unit
    log(project, again)
    check(project, units[0], False)
    check(project, units[1], True)
    check(project, again, True)
    # A claim of the whole job (no unit) below the newest token is refused as before.
    check(project, Claim(job, units[2].token), False)


def test_units_done_are_counted_once_whatever_the_order(
    hub: Hub, redis_server: RedisServer
) -> None:
    project, job = new_project(), f"j-{new_project()}"
    units = [unit_of(claim(job), f"asset-{i}") for i in range(4)]

    def done(fence: Claim) -> None:
        counted = dataclasses.replace(fence, done_of=(4, 20, 60))
        under(
            counted, lambda: ProgressService.publish_progress(project, "ASSETS_GENERATING", 20, "d")
        )

    for fence in (units[2], units[0], units[2], units[3], units[1]):
        done(fence)
    updates = [f["data"] for f in redis_server.history(project) if f["event"] == "progress_update"]
    assert [(u["units_done"], u["units_total"], u["progress"]) for u in updates] == [
        (1, 4, 30),
        (2, 4, 40),
        (2, 4, 40),  # asset-2 again (a redelivery): not counted twice
        (3, 4, 50),
        (4, 4, 60),
    ]
    state = redis_server.state(project)
    assert (state["units_done"], state["units_total"]) == ("4", "4")


def test_stale_after_its_own_complete(hub: Hub) -> None:
    project = new_project()
    only = claim(f"j-{project}")
    complete(project, only)
    check(project, only, False)


def test_current_for_the_current_holder(hub: Hub) -> None:
    project = new_project()
    earlier, current = claim(f"j1-{project}"), claim(f"j2-{project}")
    log(project, earlier)
    log(project, current)
    check(project, current, True)


def test_current_for_a_brand_new_project(hub: Hub) -> None:
    elsewhere = new_project()
    fence = claim(f"j-{elsewhere}")
    log(elsewhere, fence)  # seen in another project: no matter here
    check(new_project(), fence, True)


def test_the_asyncio_publisher_answers_the_same(hub: Hub) -> None:
    project = new_project()
    first, later = claim(f"j1-{project}"), claim(f"j2-{project}")
    log(project, first)
    log(project, later)

    async def answers() -> list[bool]:
        publisher = progress_aio.publisher()
        return [await publisher.claim_is_current(project, c) for c in (first, later)]

    assert asyncio.run(answers()) == [False, True]


def test_on_a_cluster(redis_cluster: RedisCluster) -> None:
    """The reads are one MULTI on the project's slot (its keys share its hash tag)."""
    progress_hub.configure(redis_url=redis_cluster.url)
    try:
        project = new_project()
        first = claim(f"j1-{project}")
        log(project, first)
        later = claim(f"j2-{project}")
        check(new_project(), later, True)
        log(project, later)
        check(project, first, False)
        check(project, later, True)
    finally:
        progress_hub.configure(redis_url=progress_hub.config.DEFAULT_REDIS_URL)
