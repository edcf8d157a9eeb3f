"""The contract the package runs on is the repository's: the wheel carries the same
publish script and the same error catalog (rendered from `src/catalog.rs`)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import PYTHON_DIR, REPO

from progress_hub import _contract


def test_the_wheel_carries_the_repositorys_contract_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=PYTHON_DIR,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("progress_hub-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "progress_hub/py.typed" in names
        for packaged, source in [
            ("progress_hub/contract/publish.lua", "src/broker/redis/publish.lua"),
            ("progress_hub/contract/error-catalog.json", "contract/error-catalog.json"),
            ("progress_hub/contract/state-labels.json", "contract/state-labels.json"),
            ("progress_hub/contract/publisher-defaults.json", "contract/publisher-defaults.json"),
        ]:
            assert archive.read(packaged) == (REPO / source).read_bytes(), (
                f"{packaged} differs from {source}"
            )


def test_the_installed_package_reads_the_same_files() -> None:
    assert _contract.read_text("publish.lua") == (REPO / "src/broker/redis/publish.lua").read_text(
        "utf-8"
    )
    assert _contract.read_text("error-catalog.json") == (
        REPO / "contract/error-catalog.json"
    ).read_text("utf-8")
