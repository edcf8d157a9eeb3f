"""The publish path against a real Redis: ids, history and state, coalescing, clamping,
fencing, outages, threads and forks."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from typing import Any

import pytest
from conftest import Hub, RedisServer, new_project, start_hub, stop, wait_for

import progress_hub
from progress_hub import ProgressService, PublishUnavailable, StaleClaim, _run, _sync
from progress_hub._redis import Claim


def test_the_seeds_first_call_is_accepted_and_echoed(redis_server: RedisServer) -> None:
    project = new_project()
    first = ProgressService.publish_stage_change(
        project_id=project,
        previous_stage="INITIALIZED",
        current_stage="SCRIPT_GENERATING",
        progress=5,
    )
    assert first is not None and first.endswith(":1")
    (frame,) = redis_server.history(project)
    assert frame["id"] == first
    assert frame["data"]["previous_stage"] == "INITIALIZED"
    assert frame["data"]["current_stage"] == "SCRIPT_GENERATING"
    state = redis_server.state(project)
    assert state["status"] == "SCRIPT_GENERATING"
    assert state["current_stage"] == "正在生成腳本..."
    assert state["last_event_id"] == first


def test_an_sdk_with_a_large_history_setting_keeps_the_hubs(redis_server: RedisServer) -> None:
    """Issue 23 §7: an SDK configured for 20,000 events / 1 GiB grew one project far past
    the hub's bounds. It follows the policy the hub announces (`progress-hub:history`)."""
    hub = start_hub(redis_server.url, "--history-len", "4", "--history-bytes", "30000")
    try:
        wait_for(
            "the hub to announce its history policy",
            lambda: redis_server.client().exists("progress-hub:history"),
        )
        project = new_project()
        progress_hub.configure(history_len=20_000, history_bytes=2**30)
        try:
            for i in range(10):
                ProgressService.publish_log(project, "INFO", f"{i}" + "x" * 100)
        finally:
            progress_hub.configure(
                history_len=progress_hub.config.Config().history_len,
                history_bytes=progress_hub.config.Config().history_bytes,
            )
        frames = redis_server.history(project)
        assert [f["data"]["message"][0] for f in frames] == ["6", "7", "8", "9"]
    finally:
        stop(hub.proc)


@pytest.mark.parametrize("name", ["history_len", "history_bytes", "active_ttl", "retention"])
def test_nonsense_history_settings_are_refused(name: str) -> None:
    with pytest.raises(progress_hub.InvalidConfig, match=name):
        settings: dict[str, Any] = {name: 0}
        dataclasses.replace(progress_hub.config.Config(), **settings)


def test_a_state_of_another_redis_incarnation_begins_a_new_epoch(
    redis_server: RedisServer,
) -> None:
    # The hub stamps `progress:era` with the run_id of a restarted Redis (issue 23 §2):
    # a project last written under the old one may lack writes whose ids were handed
    # out, so the SDK's next publish, through the same script, begins a new epoch. The
    # history is kept and the sequence goes on, so an id the restart kept stays a
    # position (the hub's replay checks the entry at its sequence number).
    project = new_project()
    redis_server.client().set("progress:era", "before-the-restart")
    first = ProgressService.publish_log(project, "INFO", "one")
    second = ProgressService.publish_log(project, "INFO", "two")
    assert first is not None and second is not None
    assert second.split(":")[0] == first.split(":")[0]
    redis_server.client().set("progress:era", "after-the-restart")
    third = ProgressService.publish_log(project, "INFO", "three")
    assert third is not None
    assert third.split(":")[0] != first.split(":")[0] and third.endswith(":3")
    assert [f["id"] for f in redis_server.history(project)] == [first, second, third]
    assert redis_server.state(project)["era"] == "after-the-restart"


def test_progress_updates_are_coalesced_and_the_newest_goes_out_by_itself(
    redis_server: RedisServer,
) -> None:
    project = new_project()
    first = ProgressService.publish_progress(project, "RENDERING", 10, "10")
    assert first is not None
    assert ProgressService.publish_progress(project, "RENDERING", 20, "20") is None
    assert ProgressService.publish_progress(project, "RENDERING", 30, "30", 12) is None
    # Nothing else is published: the held update goes out at the end of the window.
    frames = wait_for(
        "the held update",
        lambda: len(redis_server.history(project)) == 2 and redis_server.history(project),
    )
    assert [f["data"]["current_stage"] for f in frames] == ["10", "30"]
    assert frames[1]["data"]["progress"] == 30
    assert redis_server.state(project)["estimated_remaining"] == "12"


def test_another_event_flushes_a_held_update_first(redis_server: RedisServer) -> None:
    project = new_project()
    ProgressService.publish_progress(project, "RENDERING", 10, "10")
    assert ProgressService.publish_progress(project, "RENDERING", 20, "20") is None
    log_id = ProgressService.publish_log(project, "INFO", "after")
    assert log_id is not None and log_id.endswith(":3")
    names = [(f["event"], f["data"].get("progress")) for f in redis_server.history(project)]
    assert names == [("progress_update", 10), ("progress_update", 20), ("log", None)]


def test_progress_never_goes_backwards(redis_server: RedisServer) -> None:
    project = new_project()
    ProgressService.publish_stage_change(project, "INITIALIZED", "RENDERING", 60)
    ProgressService.publish_log(project, "INFO", "x")
    ProgressService.publish_stage_change(project, "RENDERING", "UPLOADING", 40)
    assert redis_server.history(project)[-1]["data"]["progress"] == 60


def test_history_keeps_no_more_bytes_than_configured(redis_server: RedisServer) -> None:
    # publish.lua trims by bytes as well as by count (the input max_bytes, the SDK's
    # history_bytes while no hub announces its own).
    project = new_project()
    progress_hub.configure(history_bytes=20_000)
    try:
        for i in range(10):
            ProgressService.publish_log(project, "INFO", f"{i}" + "x" * 8000)
    finally:
        progress_hub.configure(history_bytes=progress_hub.config.Config().history_bytes)
    frames = redis_server.history(project)
    assert [f["data"]["message"][0] for f in frames] == ["8", "9"]
    assert redis_server.state(project)["last_event_id"].endswith(":10")


def test_a_held_update_goes_out_at_exit(redis_server: RedisServer) -> None:
    project = new_project()
    code = (
        "import progress_hub\n"
        f"progress_hub.configure(redis_url={redis_server.url!r})\n"
        "from progress_hub import ProgressService as P\n"
        f"assert P.publish_progress({project!r}, 'RENDERING', 1, 'a') is not None\n"
        f"assert P.publish_progress({project!r}, 'RENDERING', 2, 'b') is None\n"
    )
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    assert [f["data"]["progress"] for f in redis_server.history(project)] == [1, 2]


def test_fencing_refuses_an_older_claim_and_a_completed_job(redis_server: RedisServer) -> None:
    project = new_project()
    publisher = _sync.publisher()
    old, new = publisher.next_claim("job-1"), publisher.next_claim("job-1")
    assert old is not None and new is not None and new.token > old.token

    def under(claim: Claim | None, call: object) -> object:
        token = _run.current_run.set(_run.Run(claim))
        try:
            return call()  # type: ignore[operator]
        finally:
            _run.current_run.reset(token)

    under(old, lambda: ProgressService.publish_log(project, "INFO", "old run"))
    under(new, lambda: ProgressService.publish_log(project, "INFO", "new run"))
    with pytest.raises(StaleClaim, match="superseded"):
        under(old, lambda: ProgressService.publish_log(project, "INFO", "late"))
    under(
        new,
        lambda: ProgressService.publish_complete(
            project, "COMPLETED", "https://youtube.com/watch?v=1"
        ),
    )
    newest = publisher.next_claim("job-1")
    with pytest.raises(StaleClaim, match="already completed"):
        under(newest, lambda: ProgressService.publish_complete(project, "COMPLETED"))
    messages = [f["data"].get("message") for f in redis_server.history(project)]
    assert messages == ["old run", "new run", None]


def test_an_outage_longer_than_the_budget_is_a_typed_error() -> None:
    progress_hub.configure(redis_url="redis://127.0.0.1:1", retry_for=0.3, command_timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(PublishUnavailable, match=r"Redis unreachable for 0.3 s"):
            ProgressService.publish_log("p", "INFO", "x")
        assert time.monotonic() - started < 5
    finally:
        progress_hub.configure(
            redis_url=progress_hub.config.DEFAULT_REDIS_URL, retry_for=30.0, command_timeout=2.0
        )


def test_threads_publish_concurrently(redis_server: RedisServer) -> None:
    project = new_project()
    ids: list[str | None] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(25):
            sent = ProgressService.publish_log(project, "INFO", f"{n}-{i}")
            with lock:
                ids.append(sent)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 200 and None not in ids
    assert len(redis_server.history(project)) == 200


def test_a_forked_child_publishes_on_its_own_connection(redis_server: RedisServer) -> None:
    project = new_project()
    ProgressService.publish_log(project, "INFO", "parent before")
    parent_client = _sync.publisher().transport
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            sent = ProgressService.publish_log(project, "INFO", "child")
            code = 0 if sent and _sync.publisher().transport is not parent_client else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"\x00"
    os.waitpid(pid, 0)
    ProgressService.publish_log(project, "INFO", "parent after")
    messages = [f["data"]["message"] for f in redis_server.history(project)]
    assert messages == ["parent before", "child", "parent after"]


def test_slots_of_idle_projects_are_swept(redis_server: RedisServer) -> None:
    progress_hub.configure(coalesce_window=0.05)
    try:
        publisher = _sync.publisher()
        for n in range(300):
            ProgressService.publish_progress(f"sweep-{n}", "RENDERING", 1, "x")
            time.sleep(0.001)
        time.sleep(0.06)  # every window is over: nothing to await but time
        ProgressService.publish_progress("sweep-last", "RENDERING", 1, "x")
        assert len(publisher._entries) < 300, "idle projects were forgotten"
        assert redis_server.history("sweep-299")[0]["data"]["progress"] == 1
    finally:
        progress_hub.configure(coalesce_window=0.5)


def _publish_two_updates(project: str) -> None:
    """A multiprocessing child: the second update is held by coalescing when it exits."""
    assert ProgressService.publish_progress(project, "RENDERING", 10, "a") is not None
    assert ProgressService.publish_progress(project, "RENDERING", 90, "b") is None


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_multiprocessing_child_sends_what_it_holds_when_it_exits(
    redis_server: RedisServer, method: str
) -> None:
    import multiprocessing

    project = new_project()
    # The child's configuration: its own (spawn, forkserver) is read from the environment.
    os.environ["REDIS_URL"] = redis_server.url
    try:
        context: Any = multiprocessing.get_context(method)
        child = context.Process(target=_publish_two_updates, args=(project,))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
    finally:
        del os.environ["REDIS_URL"]
    # Sent by the child as it exited (`os._exit`: no atexit), not by a timer (it died).
    assert [f["data"]["progress"] for f in redis_server.history(project)] == [10, 90]


@pytest.mark.parametrize("mode", ["http", "redis"])
def test_reconfiguring_under_sends_in_other_threads_lets_them_finish(
    hub: Hub, redis_server: RedisServer, mode: str
) -> None:
    """`configure()` from one thread while others' sends are in flight (held there: the
    hub, or Redis, is stopped): they finish on the old transport, closed after them.
    Before, HTTP sends failed on the closed client ("the client has been closed"), and
    in Redis mode `configure()` itself hung on the stuck send's project lock."""
    project = new_project()
    progress_hub.configure(hub_url=hub.base if mode == "http" else None, command_timeout=20)
    ProgressService.publish_log(project, "INFO", "first")
    old = _sync.publisher()
    stopped = hub.proc.pid if mode == "http" else redis_server.proc.pid
    results: dict[str, Any] = {}

    def send(message: str) -> None:
        try:
            results[message] = ProgressService.publish_log(project, "INFO", message)
        except Exception as err:
            results[message] = err

    messages = [f"m{i}" for i in range(8)]
    os.kill(stopped, signal.SIGSTOP)
    try:
        threads = [threading.Thread(target=send, args=(m,)) for m in messages]
        for thread in threads:
            thread.start()
        wait_for("the sends to be in flight", lambda: old.in_flight() == len(messages))
        progress_hub.configure(retry_for=29.0)
    finally:
        os.kill(stopped, signal.SIGCONT)
        for thread in threads:
            thread.join(timeout=60)
        progress_hub.configure(hub_url=None, retry_for=30.0, command_timeout=2.0)
    assert all(isinstance(results[m], str) for m in messages), results
    landed = [f["data"]["message"] for f in redis_server.history(project)]
    assert sorted(landed) == sorted(["first", *messages])
    wait_for("the old transport to close", old.closed)
