"""docs/PYTHON.md lists the values an event's fields take and the error catalog's
codes, rendered from the contract files (`contract/*.json`, themselves rendered from the
hub's Rust types): this fails when the doc drifts from them.
`UPDATE_DOCS=1 pytest tests/test_docs.py` rewrites the rendered part."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from conftest import REPO

import progress_hub
import progress_hub.aio
from progress_hub import _contract, _event

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


#: Each closed set of an event, and the SDK's own validation of one value of it (through
#: the builders `ProgressService` calls; `InvalidEvent` when it is refused).
ACCEPTS: dict[str, Callable[[str], object]] = {
    "stages": lambda v: _event.progress_update(v, 1, "text", None),
    "current_stages": lambda v: _event.stage_change(None, v, 1),
    "previous_stages": lambda v: _event.stage_change(v, "RENDERING", 1),
    "log_levels": lambda v: _event.log(v, "text"),
    "complete_statuses": lambda v: _event.complete(v, None),
    "error_codes": lambda v: _event.error(v, "text", "RENDERING", 0, 0, "en"),
    "error_stages": lambda v: _event.error("INTERNAL_ERROR", "text", v, 0, 0, "en"),
}


def accepted(accepts: Callable[[str], object], value: str) -> bool:
    try:
        accepts(value)
    except _event.InvalidEvent:
        return False
    return True


def disagreements(values: dict[str, Any], codes: list[str]) -> list[str]:
    """Where the SDK's validation differs from the contract's closed sets: for each set,
    which of every value the contract or the SDK names (and one that is in none) the SDK
    accepts must be exactly the set."""
    wanted = {
        "stages": values["stages"],
        "current_stages": values["stages"],
        "previous_stages": values["previous_stages"],
        "log_levels": values["log_levels"],
        "complete_statuses": values["complete_statuses"],
        "error_codes": codes,
        "error_stages": values["stages"],
    }
    known = (_event.STAGES, _event.PREVIOUS_STAGES, _event.LEVELS, _event.COMPLETE_STATUSES)
    candidates = {v for listed in (*wanted.values(), *known) for v in listed}
    candidates |= set(_contract.error_catalog()) | {"NOT_IN_THE_CONTRACT"}
    found = []
    for name, accepts in ACCEPTS.items():
        taken = {v for v in candidates if accepted(accepts, v)}
        if taken != set(wanted[name]):
            found.append(f"{name}: SDK {sorted(taken)} != contract {sorted(wanted[name])}")
    return found


def test_the_sdk_validates_against_the_same_values() -> None:
    """The SDK's validation, not its constants, against the repository's contract files
    (read here, not through the SDK)."""
    values = contract("wire-values.json")
    codes = list(contract("error-catalog.json")["codes"])
    assert "INTERNAL_ERROR" in codes and "RENDERING" in values["stages"]
    assert disagreements(values, codes) == []


def test_a_drifted_contract_is_caught() -> None:
    """The check above can fail: a value the SDK does not know, or one it knows that the
    contract dropped, each is a disagreement."""
    values = contract("wire-values.json")
    codes = list(contract("error-catalog.json")["codes"])
    grown = {**values, "log_levels": [*values["log_levels"], "TRACE"]}
    assert [d.split(":")[0] for d in disagreements(grown, codes)] == ["log_levels"]
    shrunk = {**values, "complete_statuses": values["complete_statuses"][1:]}
    assert [d.split(":")[0] for d in disagreements(shrunk, codes)] == ["complete_statuses"]
    assert [d.split(":")[0] for d in disagreements(values, codes[1:])] == ["error_codes"]


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
        progress_hub.tokens.mint,
        progress_hub.mint_token,
        progress_hub.Config,
    ):
        assert "Raises" in (inspect.getdoc(raising) or ""), f"{raising} names no exception"
