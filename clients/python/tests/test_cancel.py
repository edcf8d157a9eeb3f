"""Cancel from Python (issue 25 §3) against the real hub: `progress_hub.control.cancel`
and its refusals, and a Celery chain of `ProgressTask`s cancelled mid-run: one
`complete` CANCELLED, the running task stops at its next publish, the chain's next
tasks never start."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from celery import Celery
from conftest import Hub, RedisServer, Watcher, Workers, new_project, wait_for
from test_celery import start

from progress_hub import ProgressService
from progress_hub.celery import ProgressTask
from progress_hub.control import CancelRefused, cancel

app = Celery("cancel-tests", broker="memory://")


#: What `polling_task` saw, in order (its return value is not kept: a run whose job
#: ended under it does not continue its chain, see below).
polled: list[bool] = []


@app.task(bind=True, base=ProgressTask)  # type: ignore[untyped-decorator]
def polling_task(self: ProgressTask, project_id: str, hub_base: str) -> None:
    """Polls, publishes, has its job cancelled, polls again."""
    polled.append(self.is_cancelled())
    ProgressService.publish_stage_change(project_id, "INITIALIZED", "RENDERING", 60)
    cancel(project_id, hub_url=hub_base)
    polled.append(self.is_cancelled())


def test_a_task_polls_its_cancel_and_a_cancelled_jobs_task_never_starts(
    hub: Hub, redis_server: RedisServer
) -> None:
    project = new_project()
    polled.clear()
    first = polling_task.apply(args=[project, hub.base])
    assert polled == [False, True]
    assert first.state == "IGNORED", "a cancelled job's chain does not go on"
    events = [f["event"] for f in redis_server.history(project)]
    assert events == ["stage_change", "complete"]
    # Another task of the same job (a later link, a redelivery) is ignored unstarted.
    again = polling_task.apply(args=[project, hub.base], task_id=first.id)
    assert again.state == "IGNORED"
    assert polled == [False, True], "its body did not run"
    assert [f["event"] for f in redis_server.history(project)] == events


def test_cancel_ends_a_run_and_refusals_say_why(
    hub: Hub, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CancelRefused) as unknown:
        cancel(new_project(), hub_url=hub.base)
    assert (unknown.value.status, unknown.value.code) == (404, "NO_JOB")

    project = new_project()
    ProgressService.publish_stage_change(project, "INITIALIZED", "RENDERING", 40)
    answer = cancel(project, hub_url=hub.base)
    assert answer == {"project_id": project, "job_id": None}
    assert redis_server.state(project)["status"] == "CANCELLED"
    with pytest.raises(CancelRefused) as ended:
        cancel(project, hub_url=hub.base)
    assert (ended.value.status, ended.value.code) == (409, "JOB_ENDED")
    assert "CANCELLED" in str(ended.value)

    with pytest.raises(CancelRefused) as hostile:
        cancel("../etc", hub_url=hub.base)
    assert hostile.value.status == 400
    monkeypatch.delenv("HUB_URL", raising=False)
    with pytest.raises(ValueError, match="HUB_URL"):
        cancel(project)
    monkeypatch.setenv("HUB_URL", hub.base)
    with pytest.raises(CancelRefused):
        cancel(project)


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_cancelled_celery_chain_stops_and_ends_cancelled_once(
    pool: str,
    hub: Hub,
    redis_server: RedisServer,
    workers: Workers,
    watch: Callable[[str], Watcher],
) -> None:
    project = new_project()
    workers.start(pool)
    watcher = watch(hub.ws_url(project))
    start(workers, project, mock_delay=0.2)
    wait_for(
        "the assets stage",
        lambda: any(
            f["data"].get("current_stage") == "ASSETS_GENERATING" for f in watcher.events()
        ),
    )
    assert cancel(project, hub_url=hub.base)["job_id"] is None
    frames = watcher.wait_complete()
    assert [f["data"]["status"] for f in frames if f["event"] == "complete"] == ["CANCELLED"]
    # The assets task stops at its next publish (refused: ignored), and no later task of
    # the chain runs.
    wait_for("the assets task to end", lambda: " ignored" in workers.text())
    assert workers.text().count(" succeeded in ") == 1, workers.text()
    history = redis_server.history(project)
    assert [f["event"] for f in history].count("complete") == 1
    assert history[-1]["event"] == "complete", "nothing after the CANCELLED complete"
    stages = [f["data"]["current_stage"] for f in history if f["event"] == "stage_change"]
    assert stages == ["SCRIPT_GENERATING", "ASSETS_GENERATING"]
    assert redis_server.state(project)["status"] == "CANCELLED"
