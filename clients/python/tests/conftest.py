"""Real parts for the tests: a `redis-server` per test on a free port (and one per
session as the Celery broker), the hub binary on port 0, and Celery worker processes
running the example app. Nothing is mocked."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis

import progress_hub

HERE = Path(__file__).resolve().parent
PYTHON_DIR = HERE.parent
REPO = PYTHON_DIR.parents[1]
EXAMPLES = PYTHON_DIR / "examples"
HUB_BIN = Path(os.environ.get("HUB_BIN", REPO / "target" / "debug" / "progress-hub"))
#: How long anything the tests wait for may take before the test fails.
PATIENCE = 30.0


def wait_for(what: str, check: Callable[[], Any], timeout: float = PATIENCE) -> Any:
    """Polls `check` until it returns something truthy; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Output:
    """A child process's output, collected by a thread (so the pipe never fills)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        assert proc.stdout is not None
        stream = proc.stdout
        thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line)

    def text(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def search(self, pattern: str) -> re.Match[str] | None:
        return re.search(pattern, self.text())


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a paused process cannot terminate
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def history(self, project: str) -> list[dict[str, Any]]:
        """The project's history, oldest first, as frames."""
        key = f"progress:{{{project}}}:history"
        entries = cast(list[tuple[str, dict[str, str]]], self.client().xrange(key))
        return [json.loads(fields["frame"]) for _, fields in entries]

    def state(self, project: str) -> dict[str, str]:
        return cast(dict[str, str], self.client().hgetall(f"progress:{{{project}}}:state"))


#: Stops a process the tests started (for tests that start one of their own).
stop = _stop


def started(port: int, proc: subprocess.Popen[str], timeout: float = PATIENCE) -> bool:
    """Waits until the `redis-server` started as `proc` answers on `port` as itself (the
    `process_id` of its `INFO server` is `proc`'s). A port chosen free can be taken by
    another process between choosing and binding, e.g. another test's server: `proc` then
    exits ("Address already in use") while the other answers on the port, so a PING alone
    could hand a test someone else's server. False when `proc` has exited or has not
    answered within `timeout`: the caller tries another port."""
    # A socket timeout: the one answering may be another test's paused server.
    node = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                return int(node.info("server")["process_id"]) == proc.pid
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.02)
        return False
    finally:
        node.close()


def start_server(
    args: Callable[[int], list[str]], tries: int = 20
) -> tuple[int, subprocess.Popen[str]]:
    """`redis-server` on a free port, `args(port)` its arguments, once it answers there as
    itself (`started`); a port another process took meanwhile is given up for another."""
    for _ in range(tries):
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", *args(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if started(port, proc):
            return port, proc
        _stop(proc)
    pytest.fail(f"redis-server did not start on {tries} ports")


def start_redis() -> RedisServer:
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return RedisServer(*start_server(lambda port: ["--port", str(port), *common]))


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """The Redis the events go to (the hub's), one per test."""
    server = start_redis()
    progress_hub.configure(redis_url=server.url, hub_url=None, token=None, retry_for=30.0)
    yield server
    progress_hub.configure(redis_url=progress_hub.config.DEFAULT_REDIS_URL)
    _stop(server.proc)


@pytest.fixture(scope="session")
def broker_redis() -> Iterator[RedisServer]:
    """Celery's broker (a Redis of its own, so that pausing the hub's Redis tests the
    publisher, not Celery's reconnects)."""
    server = start_redis()
    yield server
    _stop(server.proc)


@dataclass
class Hub:
    base: str
    proc: subprocess.Popen[str]
    output: Output

    def ws_url(self, project: str, last_event_id: str | None = None) -> str:
        url = self.base.replace("http://", "ws://") + f"/api/v1/projects/{project}/progress"
        return url + (f"?last_event_id={last_event_id}" if last_event_id else "")


@dataclass
class RedisCluster:
    """3 masters on loopback, no replicas, each node in a directory of its own."""

    ports: list[int]
    procs: list[subprocess.Popen[str]]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def history(self, project: str) -> list[dict[str, Any]]:
        from redis.cluster import ClusterNode
        from redis.cluster import RedisCluster as Client

        seed = ClusterNode("127.0.0.1", self.ports[0])  # type: ignore[no-untyped-call]
        client = Client(startup_nodes=[seed], decode_responses=True)
        key = f"progress:{{{project}}}:history"
        entries = cast(list[tuple[str, dict[str, str]]], client.xrange(key))
        client.close()
        return [json.loads(fields["frame"]) for _, fields in entries]


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    # `redis-cli --cluster create` waits for the nodes to agree without a bound ("Waiting
    # for the cluster to join"): a minute, then the nodes are stopped and the whole start
    # is made again on new ports, 3 tries at most, the tool's output printed for each.
    # Nothing under test runs yet: this retries the machine's setup, never an assertion.
    failures = []
    for attempt in range(3):
        created = _create_cluster(tmp_path / f"try-{attempt}")
        if isinstance(created, RedisCluster):
            cluster = created
            break
        print(f"redis-cli --cluster create failed, trying again on new ports:\n{created}")
        failures.append(created)
    else:
        pytest.fail(f"redis-cli --cluster create failed 3 times: {failures}")
    try:
        for port in cluster.ports:
            node = redis.Redis(port=port, decode_responses=True)
            wait_for(
                f"cluster_state:ok on {port}",
                lambda node=node: node.execute_command("CLUSTER INFO").get("cluster_state") == "ok",  # type: ignore[misc]
            )
        yield cluster
    finally:
        for proc in cluster.procs:
            _stop(proc)


def _create_cluster(dir: Path) -> RedisCluster | str:
    """3 nodes, each in a directory of its own, joined by `redis-cli --cluster create`
    (a minute at most); if it fails, the nodes are stopped and the tool's output returned."""
    cluster = RedisCluster([], [])

    dir.mkdir()

    def node(port: int) -> list[str]:
        node_dir = tempfile.mkdtemp(prefix=f"{port}-", dir=dir)  # a new one for each port tried
        return ["--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                "--cluster-port", str(free_port()), "--cluster-config-file", "nodes.conf",
                "--dir", node_dir, "--save", "", "--appendonly", "no"]  # fmt: skip

    joined = False
    try:
        for _ in range(3):
            port, proc = start_server(node)
            cluster.ports.append(port)
            cluster.procs.append(proc)
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in cluster.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
        )  # fmt: skip
        if created.returncode == 0:
            joined = True
            return cluster
        return created.stdout
    except subprocess.TimeoutExpired as timeout:
        text = timeout.output.decode() if isinstance(timeout.output, bytes) else timeout.output
        return f"{text or ''}\n(did not end within 60 s)"
    finally:
        if not joined:
            for proc in cluster.procs:
                _stop(proc)


@dataclass
class RedisSentinel:
    """A primary, its replica and three sentinels (down after 1 s) on loopback."""

    sentinel_ports: list[int]
    procs: list[subprocess.Popen[str]]
    master: str = "mymaster"

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.master}"

    def sentinel(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[0], decode_responses=True)

    def primary_port(self) -> int:
        """The primary as `SENTINEL MASTERS` names it (what clients are told; it changes
        at `+switch-master`, after the promoted replica takes writes)."""
        master = cast(dict[str, Any], self.sentinel().sentinel_master(self.master))
        return int(master["port"])

    def history(self, project: str) -> list[dict[str, Any]]:
        return RedisServer(self.primary_port(), self.procs[0]).history(project)

    def failover(self) -> None:
        """`SENTINEL FAILOVER`; returns once the switch is complete. The primary first
        waits until its replica has every write (`WAIT`): replication is asynchronous, and
        a forced failover right after a write would otherwise lose it with the old
        primary (a new history on the new one), which is Redis's behaviour, not the
        publisher's under test."""
        old = self.primary_port()
        primary = redis.Redis(host="127.0.0.1", port=old)
        try:
            # WAIT counts from this connection's own last write: one write first, so it
            # waits for everything written before it too.
            primary.incr("test:failover")
            acked = primary.execute_command("WAIT", 1, 10_000)  # type: ignore[no-untyped-call]
        finally:
            primary.close()
        assert acked == 1, "the replica has every write before the failover"
        self.sentinel().execute_command("SENTINEL FAILOVER", self.master)  # type: ignore[no-untyped-call]
        wait_for("the sentinels to name a new primary", lambda: self.primary_port() != old)
        # The switch is complete once every sentinel names the new primary (a client asks
        # whichever answers first: one that has not heard of the switch yet names the old
        # one) and the old primary has become its replica (until then it still takes
        # writes, which its resync from the new primary then drops).
        new = self.primary_port()

        def switched() -> bool:
            for port in self.sentinel_ports:
                sentinel = redis.Redis(port=port, decode_responses=True)
                try:
                    master = cast(dict[str, Any], sentinel.sentinel_master(self.master))
                finally:
                    sentinel.close()
                if int(master["port"]) != new:
                    return False
            demoted = redis.Redis(host="127.0.0.1", port=old)
            try:
                role = demoted.execute_command("ROLE")  # type: ignore[no-untyped-call]
            finally:
                demoted.close()
            return bool(role[0] in (b"slave", "slave") and int(role[2]) == new)

        wait_for("every sentinel to name it and the old primary to follow it", switched)


@pytest.fixture
def redis_sentinel(tmp_path: Path) -> Iterator[RedisSentinel]:
    setup = RedisSentinel([], [])
    try:
        # A replica writes the primary's snapshot to its dir: the test's, not the cwd.
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
        primary, proc = start_server(lambda port: ["--port", str(port), *common])
        setup.procs.append(proc)
        replica = ["--replicaof", "127.0.0.1", str(primary)]
        setup.procs.append(start_server(lambda port: ["--port", str(port), *common, *replica])[1])
        for i in range(3):
            conf = tmp_path / f"sentinel-{i}.conf"

            def sentinel(port: int, conf: Path = conf) -> list[str]:
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {tmp_path}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {primary} 2\n"
                    "sentinel down-after-milliseconds mymaster 1000\n"
                    "sentinel failover-timeout mymaster 5000\n"
                )
                return [str(conf), "--sentinel"]

            port, proc = start_server(sentinel)
            setup.procs.append(proc)
            setup.sentinel_ports.append(port)

        def settled() -> bool:
            for port in setup.sentinel_ports:
                try:
                    s = redis.Redis(port=port, decode_responses=True)
                    others = cast(list[Any], s.sentinel_sentinels("mymaster"))
                    replicas = s.sentinel_slaves("mymaster")
                except redis.RedisError:
                    return False
                ok = any(r.get("flags") == "slave" and r.get("master-link-status") == "ok"
                         for r in replicas)  # fmt: skip
                if len(others) != 2 or not ok:
                    return False
            return True

        wait_for("the sentinels to settle", settled)
        yield setup
    finally:
        for proc in setup.procs:
            _stop(proc)


def start_hub(redis_url: str, *extra: str, listen: str = "127.0.0.1:0") -> Hub:
    """The hub binary on port 0, or on `listen` (`extra`: more `serve` options, e.g.
    `--auth-secret`)."""
    if not HUB_BIN.exists():
        pytest.fail(f"no hub binary at {HUB_BIN}: run `cargo build` (or set HUB_BIN)")
    proc = subprocess.Popen(
        [
            str(HUB_BIN),
            "serve",
            "--redis-url",
            redis_url,
            "--no-worker",
            "--listen",
            listen,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "RUST_LOG": "info"},
    )
    output = Output(proc)
    found = wait_for(
        "the hub to listen",
        lambda: proc.poll() is not None or output.search(r"listening on (http://[0-9.:]+)"),
    )
    if proc.poll() is not None:
        pytest.fail(f"the hub exited: {output.text()}")
    assert isinstance(found, re.Match)
    return Hub(found.group(1), proc, output)


@pytest.fixture
def hub(redis_server: RedisServer) -> Iterator[Hub]:
    started = start_hub(redis_server.url)
    yield started
    _stop(started.proc)


@dataclass
class Workers:
    """Celery workers of the example app, consuming one queue of their own."""

    broker: RedisServer
    events: RedisServer
    queue: str = field(default_factory=lambda: f"q-{uuid.uuid4().hex[:8]}")
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)

    def start(
        self,
        pool: str = "solo",
        visibility_timeout: float = 3600,
        *,
        app: str = "celery_app",
        concurrency: int = 1,
        **extra_env: str,
    ) -> subprocess.Popen[str]:
        """A worker of `app` (the example's, or `canvas_app` from the tests)."""
        env = {
            **os.environ,
            **extra_env,
            "CELERY_BROKER_URL": self.broker.url,
            "REDIS_URL": self.events.url,
            "CELERY_VISIBILITY_TIMEOUT": str(visibility_timeout),
            "CELERY_UNACKED_RESTORE_INTERVAL": "1",
            "CELERY_UNACKED_RESTORE_THROTTLE": "1",
            "PYTHONPATH": os.pathsep.join((str(EXAMPLES), str(HERE))),
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                "--pool",
                pool,
                "--concurrency",
                str(concurrency),
                "-Q",
                self.queue,
                "-l",
                "INFO",
                "-n",
                f"{uuid.uuid4().hex[:8]}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=EXAMPLES,
        )
        output = Output(proc)
        self.procs.append(proc)
        self.outputs.append(output)
        wait_for(
            "the Celery worker to be ready",
            lambda: proc.poll() is not None or output.search(r"ready\."),
        )
        if proc.poll() is not None:
            pytest.fail(f"the Celery worker exited: {output.text()}")
        return proc

    def text(self) -> str:
        return "\n".join(o.text() for o in self.outputs)

    @staticmethod
    def pool_process(worker: subprocess.Popen[str]) -> int:
        """The pid of a prefork worker's (single) pool process."""
        path = f"/proc/{worker.pid}/task/{worker.pid}/children"
        children = wait_for("the pool process", lambda: Path(path).read_text().split())
        return int(children[0])


@pytest.fixture
def workers(broker_redis: RedisServer, redis_server: RedisServer) -> Iterator[Workers]:
    sys.path.insert(0, str(EXAMPLES))
    from celery_app import app

    app.conf.broker_url = broker_redis.url
    app.close()  # the producer pool of an earlier broker URL
    w = Workers(broker_redis, redis_server)
    yield w
    for proc in w.procs:
        _stop(proc)


def new_project() -> str:
    return f"p-{uuid.uuid4().hex[:12]}"


class Watcher:
    """A WebSocket client of one project, collecting its frames in a thread."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.frames: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        self._ws = self._stack.enter_context(connect(url, open_timeout=10))
        # The hub says `connected` once its subscription to the project is confirmed:
        # an event published before that reaches this watcher only in its snapshot. A
        # test publishes after this returns, so it waits for that first frame here.
        from websockets.exceptions import ConnectionClosed

        with contextlib.suppress(ConnectionClosed):  # refused: `all()` and the close say why
            self.frames.append(json.loads(self._ws.recv(timeout=PATIENCE)))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self._ws:
                frame = json.loads(message)
                if frame.get("event") == "ping":
                    self._ws.send(json.dumps({"event": "pong"}))
                    continue
                with self._lock:
                    self.frames.append(frame)
        except ConnectionClosed:
            pass

    def events(self) -> list[dict[str, Any]]:
        """The frames of published events (those with an id), in arrival order."""
        with self._lock:
            return [f for f in self.frames if "id" in f]

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.frames)

    def wait_complete(self, timeout: float = 60) -> list[dict[str, Any]]:
        wait_for(
            "a complete frame",
            lambda: any(f["event"] == "complete" for f in self.events()),
            timeout,
        )
        return self.events()

    def close(self) -> None:
        self._stack.close()
        self._thread.join(timeout=5)


@pytest.fixture
def watch() -> Iterator[Callable[[str], Watcher]]:
    opened: list[Watcher] = []

    def open_(url: str) -> Watcher:
        watcher = Watcher(url)
        opened.append(watcher)
        return watcher

    yield open_
    for watcher in opened:
        watcher.close()


def seq(event_id: str) -> tuple[str, int]:
    epoch, _, number = event_id.partition(":")
    return epoch, int(number)
