"""The synchronous transports and service are generated from their asyncio source
(`unasync.py`): this fails when a generated file is stale, or was edited by hand."""

from __future__ import annotations

import subprocess
import sys

from conftest import PYTHON_DIR


def test_the_generated_synchronous_code_is_fresh() -> None:
    done = subprocess.run(
        [sys.executable, "unasync.py", "--check"],
        cwd=PYTHON_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_asyncio_source_has_its_generated_twin() -> None:
    sources = sorted(p.name for p in (PYTHON_DIR / "src/progress_hub").glob("_*_async.py"))
    assert sources == ["_service_async.py", "_transport_async.py"]
