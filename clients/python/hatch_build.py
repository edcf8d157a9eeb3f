"""Packages the hub's contract files (the publish script, the error catalog, the state
texts, the publisher's defaults) into the sdist and the wheel, from the one place they
live: the repository around this directory. A wheel built from an unpacked sdist, where
that repository is not, takes the copies the sdist carries inside the package. A file
found in neither place fails the build, naming it (a package without its publish script
or error catalog installs, then fails at its first publish)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _contract_files(root: Path) -> dict[str, str]:
    """The package's list of contract files (name -> path in the repository), read
    from `_contract.py` itself (it imports nothing of the package)."""
    spec = importlib.util.spec_from_file_location(
        "_contract", root / "src/progress_hub/_contract.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    files: dict[str, str] = module.REPO_FILES
    return files


class MissingContractFile(Exception):
    """A contract file is neither in the repository nor carried by the package."""


class ContractFiles(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root).resolve()
        repository = root.parents[1]
        inside = "src/progress_hub" if self.target_name == "sdist" else "progress_hub"
        for name, source in _contract_files(root).items():
            path = repository / source
            if path.is_file():
                build_data["force_include"][str(path)] = f"{inside}/contract/{name}"
            elif not (root / "src/progress_hub/contract" / name).is_file():
                raise MissingContractFile(
                    f"contract file {name} not found: neither {path} (the hub's repository) "
                    f"nor src/progress_hub/contract/{name} (an unpacked sdist's copy); build "
                    "from a checkout of the repository, or from the sdist"
                )
