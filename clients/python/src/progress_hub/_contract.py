"""The contract this package shares with the hub, read from the files the hub's
repository keeps: the publish script (`crates/hub/src/broker/redis/publish.lua`, the one atomic step
every publisher runs) and its inputs by name (`contract/publish-inputs.json`), the error
catalog, the texts an event writes into a project's state, the publisher's defaults and
the closed sets of an event's fields (stages, levels, statuses) (`contract/*.json`, rendered
from the Rust code by `tests/contract.rs`). The sdist and the wheel carry copies made at build
time (`hatch_build.py`, which reads `REPO_FILES`); an editable install from a checkout
reads the repository's own files.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

# Where each file lives in the hub's repository, and its name inside the package.
REPO_FILES = {
    "publish.lua": "crates/hub/src/broker/redis/publish.lua",
    "publish-inputs.json": "contract/publish-inputs.json",
    "error-catalog.json": "contract/error-catalog.json",
    "state-labels.json": "contract/state-labels.json",
    "publisher-defaults.json": "contract/publisher-defaults.json",
    "wire-values.json": "contract/wire-values.json",
}


def _repo_root() -> Path:
    # clients/python/src/progress_hub/_contract.py -> the repository's root
    return Path(__file__).resolve().parents[4]


def read_text(name: str) -> str:
    """The contract file `name`: the packaged copy, or the repository's file."""
    packaged = resources.files("progress_hub").joinpath("contract").joinpath(name)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (_repo_root() / REPO_FILES[name]).read_text(encoding="utf-8")


@cache
def publish_script() -> str:
    return read_text("publish.lua")


@cache
def publish_inputs() -> dict[str, Any]:
    """How `publish.lua` is called, by name (`contract/publish-inputs.json`): its KEYS in
    order, the inputs it reads, the prefix of the state patch and the state's fields."""
    described: dict[str, Any] = json.loads(read_text("publish-inputs.json"))
    return described


@cache
def error_catalog() -> dict[str, Any]:
    codes: dict[str, Any] = json.loads(read_text("error-catalog.json"))["codes"]
    return codes


@cache
def state_labels() -> dict[str, Any]:
    labels: dict[str, Any] = json.loads(read_text("state-labels.json"))
    return labels


@cache
def publisher_defaults() -> dict[str, int]:
    defaults: dict[str, int] = json.loads(read_text("publisher-defaults.json"))
    return defaults


@cache
def wire_values() -> dict[str, tuple[str, ...]]:
    """The closed sets of the wire's fields: `stages` (in pipeline order),
    `previous_stages`, `log_levels`, `complete_statuses` (the file's single values,
    such as `queued_status`, are left out)."""
    values: dict[str, object] = json.loads(read_text("wire-values.json"))
    return {
        name: tuple(str(item) for item in listed)
        for name, listed in values.items()
        if isinstance(listed, list)
    }
