"""The tests' own support, which every test's Redis depends on."""

from __future__ import annotations

import subprocess

from conftest import RedisServer, started, stop


def test_a_server_whose_port_was_taken_is_not_taken_for_the_one_answering(
    redis_server: RedisServer,
) -> None:
    # A process that has not bound the port (here one that never will), taken by another
    # server meanwhile, is never mistaken for the server answering there.
    late = subprocess.Popen(["sleep", "60"], text=True)
    try:
        assert not started(redis_server.port, late)
    finally:
        stop(late)
    assert started(redis_server.port, redis_server.proc), "the one answering is itself"
