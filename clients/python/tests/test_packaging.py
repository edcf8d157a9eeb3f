"""The contract the package runs on is the repository's: the wheel carries the same
publish script and the same error catalog (rendered from `crates/hub/src/catalog.rs`)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from conftest import PYTHON_DIR, REPO

from progress_hub import _contract


def build(target: str, source: Path, into: Path) -> Path:
    """Builds the `wheel` or `sdist` of the project at `source` (as pip would)."""
    done = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", target, "-d", str(into)],
        cwd=source,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = into.glob("progress_hub-*.whl" if target == "wheel" else "progress_hub-*.tar.gz")
    return built


def test_the_wheel_carries_the_repositorys_contract_files(tmp_path: Path) -> None:
    assert_carries_the_contract(build("wheel", PYTHON_DIR, tmp_path))


def test_a_wheel_built_from_the_sdist_carries_them_too(tmp_path: Path) -> None:
    """pip installs an sdist by building a wheel from its unpacked tree, where the
    repository's `contract/` is not."""
    sdist = build("sdist", PYTHON_DIR, tmp_path / "sdist")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (tree,) = (tmp_path / "unpacked").iterdir()
    assert_carries_the_contract(build("wheel", tree, tmp_path / "wheel"))


def assert_carries_the_contract(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "progress_hub/py.typed" in names
        assert len(_contract.REPO_FILES) == 6
        for name, source in _contract.REPO_FILES.items():
            packaged = f"progress_hub/contract/{name}"
            assert archive.read(packaged) == (REPO / source).read_bytes(), (
                f"{packaged} differs from {source}"
            )


def test_the_installed_package_reads_the_same_files() -> None:
    assert _contract.read_text("publish.lua") == (
        REPO / "crates/hub/src/broker/redis/publish.lua"
    ).read_text("utf-8")
    assert _contract.read_text("error-catalog.json") == (
        REPO / "contract/error-catalog.json"
    ).read_text("utf-8")


def test_a_missing_contract_file_fails_the_build(tmp_path: Path) -> None:
    """In a copy of the repository without the error catalog, the build fails naming it
    (it used to make a package without it); the same copy with it builds."""
    import shutil

    python = tmp_path / "repo/clients/python"
    shutil.copytree(
        PYTHON_DIR,
        python,
        ignore=shutil.ignore_patterns(".venv*", "__pycache__", ".*_cache", "dist", "build"),
    )
    for source in _contract.REPO_FILES.values():
        (tmp_path / "repo" / source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / source, tmp_path / "repo" / source)
    build("wheel", python, tmp_path / "whole")
    (tmp_path / "repo/contract/error-catalog.json").unlink()
    for target in ("wheel", "sdist"):
        done = subprocess.run(
            [sys.executable, "-m", "hatchling", "build", "-t", target, "-d", str(tmp_path / "out")],
            cwd=python,
            capture_output=True,
            text=True,
        )
        assert done.returncode != 0, f"the {target} was built without the error catalog"
        assert "contract file error-catalog.json not found" in done.stdout + done.stderr
        assert not list((tmp_path / "out").glob("progress_hub-*"))
