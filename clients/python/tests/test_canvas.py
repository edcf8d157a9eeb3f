"""Fan-out under one job (issue 25 §1, §2, §6): every Celery canvas shape, run by a real
prefork worker (concurrency 4) of `canvas_app`, watched through a real hub on a real
Redis. For each shape: exactly one `complete`, no task refused as superseded, the
units counted k/N (each once) with a progress that never goes back.

The whole matrix runs on the main venv; the other Pythons run one shape
(`scripts/test_python.sh` deselects the `canvas_matrix` mark there)."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Hub, RedisServer, Watcher, Workers, new_project, wait_for

from progress_hub.control import cancel

N = 4
matrix = pytest.mark.canvas_matrix


@pytest.fixture
def canvas(workers: Workers) -> Iterator[Any]:
    """The test side's `canvas_app` (sending the canvas; a chord needs its backend)."""
    import canvas_app

    canvas_app.app.conf.broker_url = workers.broker.url
    canvas_app.app.conf.result_backend = workers.broker.url
    canvas_app.app.close()
    yield canvas_app
    sys.modules.pop("canvas_app", None)


def units(canvas: Any, workers: Workers, project: str, opts: dict[str, Any]) -> list[Any]:
    return [canvas.asset.si(project, i, N, opts).set(queue=workers.queue) for i in range(N)]


def shape(name: str, canvas: Any, workers: Workers, project: str, opts: dict[str, Any]) -> Any:
    from celery import chain, chord, group

    q = workers.queue
    script = canvas.script.si(project, opts).set(queue=q)
    body = canvas.render.s(project, opts).set(queue=q)
    if name == "chain":
        return chain(script, canvas.upload.si(project, opts).set(queue=q))
    if name == "group":
        return group(units(canvas, workers, project, opts))
    if name == "chord":
        return chord(units(canvas, workers, project, opts), body)
    # chord inside a chain (also: retries inside the group, a kill, a cancel)
    return chain(script, chord(units(canvas, workers, project, opts), body))


def finished(watcher: Watcher, workers: Workers, timeout: float = 60) -> list[dict[str, Any]]:
    """The frames up to the `complete`; on a timeout, what the workers said."""
    try:
        return watcher.wait_complete(timeout=timeout)
    except BaseException:
        print(workers.text(), watcher.events(), sep="\n")
        raise


def counts(frames: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(f["event"] for f in frames))


def check_units(frames: list[dict[str, Any]], done: int = N) -> None:
    """k/N: each count once, in order, up to `done`; the progress never goes back."""
    counted = [f["data"] for f in frames if "units_done" in f["data"]]
    assert [c["units_done"] for c in counted] == list(range(1, done + 1)), counted
    assert {c["units_total"] for c in counted} == {N}
    assert [c["progress"] for c in counted] == [30 + 40 * k // N for k in range(1, done + 1)]
    progress = [f["data"]["progress"] for f in frames if "progress" in f["data"]]
    assert progress == sorted(progress), progress


def refused(workers: Workers) -> int:
    return workers.text().count("was superseded") + workers.text().count(" ignored")


RESULTS: dict[str, dict[str, int]] = {}


def record(name: str, frames: list[dict[str, Any]], workers: Workers) -> None:
    RESULTS[name] = {**counts(frames), "refused": refused(workers)}
    print(f"\ncanvas {name}: {RESULTS[name]}")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("chain", marks=matrix),
        pytest.param("group", marks=matrix),
        pytest.param("chord", marks=matrix),
        "chord in a chain",
    ],
)
def test_each_canvas_shape_completes_once_with_no_sibling_refused(
    name: str,
    hub: Hub,
    redis_server: RedisServer,
    workers: Workers,
    canvas: Any,
    watch: Callable[[str], Watcher],
) -> None:
    project = new_project()
    workers.start("prefork", app="canvas_app", concurrency=N)
    watcher = watch(hub.ws_url(project))
    shape(name, canvas, workers, project, {"delay": 0.2}).apply_async()
    frames = finished(watcher, workers)
    record(name, frames, workers)
    assert [f["data"]["status"] for f in frames if f["event"] == "complete"] == ["COMPLETED"]
    assert redis_server.history(project)[-1]["event"] == "complete"
    assert refused(workers) == 0, workers.text()
    if name != "chain":
        check_units(frames)
    if name in ("chord", "chord in a chain"):
        assert "ends the canvas of job" in workers.text(), "the chord's body completed it"
    state = redis_server.state(project)
    assert state["status"] == "COMPLETED" and state["fence_ended"] == state["fence_holder"]


@matrix
def test_retries_inside_the_group(
    hub: Hub,
    redis_server: RedisServer,
    workers: Workers,
    canvas: Any,
    watch: Callable[[str], Watcher],
) -> None:
    project = new_project()
    workers.start("prefork", app="canvas_app", concurrency=N)
    watcher = watch(hub.ws_url(project))
    opts = {"delay": 0.2, "fail": {"1": 2, "3": 1}}
    shape("chord in a chain", canvas, workers, project, opts).apply_async()
    frames = finished(watcher, workers)
    record("retries inside the group", frames, workers)
    assert [f["data"]["status"] for f in frames if f["event"] == "complete"] == ["COMPLETED"]
    errors = [f["data"] for f in frames if f["event"] == "error"]
    assert sorted((e["stage"], e["retry_count"]) for e in errors) == [
        ("ASSETS_GENERATING", 0),
        ("ASSETS_GENERATING", 0),
        ("ASSETS_GENERATING", 1),
    ], "each failed attempt once, of the stage the unit runs in"
    assert all(e["is_retryable"] for e in errors), "retried: retryable"
    assert refused(workers) == 0, workers.text()
    check_units(frames)


@matrix
def test_a_pool_process_killed_mid_group(
    hub: Hub,
    redis_server: RedisServer,
    workers: Workers,
    canvas: Any,
    watch: Callable[[str], Watcher],
) -> None:
    """A unit's pool process is SIGKILLed: the unit is redelivered at once (acks_late,
    reject_on_worker_lost), runs again under a newer claim of its own, and is counted
    once; its siblings are not disturbed."""
    project = new_project()
    workers.start("prefork", app="canvas_app", concurrency=N)
    watcher = watch(hub.ws_url(project))
    opts = {"delay": 0.2, "slow": {"2": 2.0}}
    shape("chord in a chain", canvas, workers, project, opts).apply_async()
    started = wait_for(
        "asset 2 to start",
        lambda: next(
            (
                re.search(r"asset 2 started in (\d+)", f["data"]["message"])
                for f in watcher.events()
                if f["event"] == "log" and "asset 2 started" in f["data"]["message"]
            ),
            None,
        ),
    )
    os.kill(int(started.group(1)), signal.SIGKILL)
    frames = finished(watcher, workers)
    record("pool process killed mid group", frames, workers)
    assert [f["data"]["status"] for f in frames if f["event"] == "complete"] == ["COMPLETED"]
    logs = [f["data"]["message"] for f in frames if f["event"] == "log"]
    assert sum("asset 2 started" in m for m in logs) == 2, "asset 2 ran again"
    # Taken over, as the hub's own worker says it: a WARNING log, then a stage_change
    # whose previous stage is its current one (the page marks the run "taken over").
    warned = [f for f in frames if f["event"] == "log" and f["data"]["level"] == "WARNING"]
    assert len(warned) == 1 and "took it over" in warned[0]["data"]["message"], warned
    again = [
        f
        for f in frames
        if f["event"] == "stage_change"
        and f["data"]["previous_stage"] == f["data"]["current_stage"]
    ]
    assert [f["data"]["current_stage"] for f in again] == ["ASSETS_GENERATING"]
    assert frames.index(again[0]) > frames.index(warned[0])
    assert refused(workers) == 0, workers.text()
    check_units(frames)


@matrix
def test_a_cancel_while_the_chord_is_half_done(
    hub: Hub,
    redis_server: RedisServer,
    workers: Workers,
    canvas: Any,
    watch: Callable[[str], Watcher],
) -> None:
    project = new_project()
    workers.start("prefork", app="canvas_app", concurrency=N)
    watcher = watch(hub.ws_url(project))
    opts = {"delay": 0.1, "slow": {"2": 30, "3": 30}}
    shape("chord in a chain", canvas, workers, project, opts).apply_async()
    wait_for(
        "two of four units done",
        lambda: any(f["data"].get("units_done") == 2 for f in watcher.events()),
    )
    cancel(project, hub_url=hub.base)
    frames = finished(watcher, workers)
    record("cancel while the chord is half done", frames, workers)
    assert [f["data"]["status"] for f in frames if f["event"] == "complete"] == ["CANCELLED"]
    check_units(frames, done=2)
    # The slow units see the cancel at their next check and end (ignored: their job is
    # over, the chord's body never runs).
    wait_for("the slow units to stop", lambda: workers.text().count(" ignored") == 2)
    assert workers.text().count(" succeeded in ") == 3, "the script and two units"
    history = redis_server.history(project)
    assert history[-1]["event"] == "complete", "nothing after the CANCELLED complete"
    assert "RENDERING" not in [f["data"].get("current_stage") for f in history]


@matrix
def test_a_unit_that_fails_for_good_fails_the_job_once(
    hub: Hub,
    redis_server: RedisServer,
    workers: Workers,
    canvas: Any,
    watch: Callable[[str], Watcher],
) -> None:
    """Its last `error` is not retryable (the page must not say "the system retries
    automatically" under "retries are exhausted"); one `complete`, FAILED."""
    project = new_project()
    workers.start("prefork", app="canvas_app", concurrency=N)
    watcher = watch(hub.ws_url(project))
    opts = {"delay": 0.2, "fail": {"1": 9}}
    shape("chord in a chain", canvas, workers, project, opts).apply_async()
    frames = finished(watcher, workers)
    record("a unit failing for good", frames, workers)
    assert [f["data"]["status"] for f in frames if f["event"] == "complete"] == ["FAILED"]
    errors = [f["data"] for f in frames if f["event"] == "error"]
    assert [e["retry_count"] for e in errors] == [0, 1, 2, 3]
    assert [e["is_retryable"] for e in errors] == [True, True, True, False]
    assert redis_server.history(project)[-1]["event"] == "complete"
