"""What the SDK says through `logging`: which Redis it writes to, once, at INFO (no
password); never the payloads it publishes, unless asked for at DEBUG."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys

import pytest
import redis
from conftest import RedisServer, new_project

import progress_hub
from progress_hub import ProgressService
from progress_hub import aio as progress_aio


def test_a_plain_script_prints_nothing_while_it_publishes(redis_server: RedisServer) -> None:
    project = new_project()
    script = (
        "from progress_hub import ProgressService as P\n"
        f"P.publish_log({project!r}, 'WARNING', 'disk almost full')\n"
        f"P.publish_log({project!r}, 'ERROR', 'a frame failed')\n"
        f"P.publish_error({project!r}, 'RENDER_ERROR', 'boom', 'RENDERING')\n"
        f"P.publish_complete({project!r}, 'FAILED')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "REDIS_URL": redis_server.url},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == ""
    assert len(redis_server.history(project)) == 4


def test_the_first_publish_says_once_which_redis_without_its_password(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server.client().config_set("requirepass", "s3cret")
    url = f"redis://:s3cret@127.0.0.1:{redis_server.port}/0"
    progress_hub.configure(redis_url=url)
    project = new_project()
    with caplog.at_level(logging.DEBUG, logger="progress_hub"):
        ProgressService.publish_log(project, "INFO", "one")
        ProgressService.publish_log(project, "INFO", "two")
        asyncio.run(progress_aio.ProgressService.publish_log(project, "INFO", "three"))
    told = [r for r in caplog.records if r.levelno == logging.INFO]
    assert [r.getMessage() for r in told] == [
        f"progress_hub publishes to Redis at redis://:***@127.0.0.1:{redis_server.port}/0"
    ]
    assert all("s3cret" not in r.getMessage() for r in caplog.records)
    redis.Redis(port=redis_server.port, password="s3cret").config_set("requirepass", "")
    assert len(redis_server.history(project)) == 3
