"""docs/PYTHON.md lists the values an event's fields take and the error catalog's
codes, rendered from the contract files (`contract/*.json`, themselves rendered from the
hub's Rust types): this fails when the doc drifts from them.
`UPDATE_DOCS=1 pytest tests/test_docs.py` rewrites the rendered part."""

from __future__ import annotations

import json
import os
from typing import Any

from conftest import REPO

import progress_hub
import progress_hub.aio
from progress_hub import _event

DOC = REPO / "docs" / "PYTHON.md"
BEGIN = "<!-- BEGIN rendered from contract/ by clients/python/tests/test_docs.py -->\n"
END = "<!-- END rendered -->\n"


def contract(name: str) -> Any:
    return json.loads((REPO / "contract" / name).read_text(encoding="utf-8"))


def listed(values: list[str]) -> str:
    return ", ".join(f"`{v}`" for v in values)


def render() -> str:
    values = contract("wire-values.json")
    codes = contract("error-catalog.json")["codes"]
    lines = [
        "| argument | allowed values |",
        "|---|---|",
        "| `publish_progress(status=)`, `publish_stage_change(current_stage=)`, "
        f"`publish_error(stage=)` | {listed(values['stages'])} (in pipeline order) |",
        f"| `publish_stage_change(previous_stage=)` | {listed(values['previous_stages'])} |",
        f"| `publish_log(level=)` | {listed(values['log_levels'])} |",
        f"| `publish_complete(status=)` | {listed(values['complete_statuses'])} |",
        f"| `publish_error(error_code=)` | one of the {len(codes)} codes below |",
        "",
        "| `error_code` | retryable | message (`en`) |",
        "|---|---|---|",
    ]
    for code, entry in codes.items():
        retryable = "yes" if entry["is_retryable"] else "no"
        lines.append(f"| `{code}` | {retryable} | {entry['locales']['en']['message']} |")
    return "\n".join(lines) + "\n"


def test_python_md_lists_what_the_contract_allows() -> None:
    doc = DOC.read_text(encoding="utf-8")
    head, begun, rest = doc.partition(BEGIN)
    _, ended, tail = rest.partition(END)
    assert begun and ended, f"docs/PYTHON.md lacks the markers {BEGIN!r} ... {END!r}"
    wanted = head + BEGIN + render() + END + tail
    if os.environ.get("UPDATE_DOCS"):
        DOC.write_text(wanted, encoding="utf-8")
        return
    assert doc == wanted, "docs/PYTHON.md differs from contract/: run UPDATE_DOCS=1 pytest"


def test_the_sdk_validates_against_the_same_values() -> None:
    values = contract("wire-values.json")
    assert list(_event.STAGES) == values["stages"]
    assert list(_event.PREVIOUS_STAGES) == values["previous_stages"]
    assert list(_event.LEVELS) == values["log_levels"]
    assert list(_event.COMPLETE_STATUSES) == values["complete_statuses"]


def test_help_tells_the_allowed_values() -> None:
    values = contract("wire-values.json")
    progress = progress_hub.ProgressService.publish_progress.__doc__ or ""
    stage_change = progress_hub.ProgressService.publish_stage_change.__doc__ or ""
    log = progress_hub.ProgressService.publish_log.__doc__ or ""
    complete = progress_hub.aio.ProgressService.publish_complete.__doc__ or ""
    error = progress_hub.ProgressService.publish_error.__doc__ or ""
    assert all(f"``{s}``" in progress for s in values["stages"])
    assert all(f"``{s}``" in stage_change for s in values["previous_stages"])
    assert all(f"``{s}``" in log for s in values["log_levels"])
    assert all(f"``{s}``" in complete for s in values["complete_statuses"])
    assert all(f"``{c}``" in error for c in contract("error-catalog.json")["codes"])
    assert "{" not in progress + stage_change + log + complete + error, "a placeholder is left"


def test_every_public_name_is_exported_and_documented() -> None:
    import inspect
    import types

    public = {
        name
        for name, value in vars(progress_hub).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } - {"annotations"}
    assert public == set(progress_hub.__all__)
    for module in (progress_hub, progress_hub.aio):
        for name in module.__all__:
            assert inspect.getdoc(getattr(module, name)), f"{module.__name__}.{name} has no doc"
    methods = [m for m in vars(progress_hub.ProgressService) if m.startswith("publish_")]
    assert len(methods) == 5
    for service in (progress_hub.ProgressService, progress_hub.aio.ProgressService):
        for method in methods:
            doc = inspect.getdoc(getattr(service, method)) or ""
            assert "Raises:" in doc and "PublishUnavailable" in doc, f"{method} names no exception"
    for raising in (
        progress_hub.configure,
        progress_hub.mint_token,
        progress_hub.Config,
    ):
        assert "Raises" in (inspect.getdoc(raising) or ""), f"{raising} names no exception"
