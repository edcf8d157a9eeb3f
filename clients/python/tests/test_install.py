"""What a new user does first: a fresh venv, `pip install './clients/python[celery]'`
and nothing else, then a Celery worker on a Redis broker running a `ProgressTask` that
publishes. (pip fetches the dependencies from the package index, as the user's would.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from celery import Celery
from conftest import PATIENCE, PYTHON_DIR, Output, RedisServer, _stop, new_project, wait_for

APP = """
from celery import Celery

from progress_hub import ProgressService
from progress_hub.celery import ProgressTask

app = Celery("first_hour", broker="{broker}")


@app.task(bind=True, base=ProgressTask, name="first_hour.generate")
def generate(self, project_id):
    ProgressService.publish_stage_change(project_id, "INITIALIZED", "SCRIPT_GENERATING", 5)
    ProgressService.publish_complete(project_id, "COMPLETED")
"""


def test_the_celery_extra_alone_runs_a_redis_broker_worker(
    tmp_path: Path, broker_redis: RedisServer, redis_server: RedisServer
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", f"{PYTHON_DIR}[celery]"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    (tmp_path / "first_hour.py").write_text(textwrap.dedent(APP).format(broker=broker_redis.url))
    queue = f"q-{uuid.uuid4().hex[:8]}"
    worker = subprocess.Popen(
        [
            *(python, "-m", "celery", "-A", "first_hour", "worker", "--pool", "solo"),
            *("-Q", queue, "-l", "INFO"),
            *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        ],
        cwd=tmp_path,
        env={"PATH": str(venv / "bin"), "REDIS_URL": redis_server.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = Output(worker)
    try:
        wait_for(
            "the worker to be ready",
            lambda: worker.poll() is not None or output.search(r"ready\."),
        )
        assert worker.poll() is None, output.text()
        project = new_project()
        sender = Celery("sender", broker=broker_redis.url)
        sender.send_task("first_hour.generate", args=[project], queue=queue)
        wait_for(
            "the task's events",
            lambda: (
                [f["event"] for f in redis_server.history(project)] == ["stage_change", "complete"]
            ),
            timeout=PATIENCE,
        )
        sender.close()
    finally:
        _stop(worker)
