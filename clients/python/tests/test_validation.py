"""Validation matches the hub's: a bad argument is a ValueError naming the field, and
nothing is sent."""

from __future__ import annotations

import pytest

import progress_hub
from progress_hub import InvalidEvent, ProgressService


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: ProgressService.publish_progress("p", "DANCING", 10, "x"), "data.status"),
        (lambda: ProgressService.publish_progress("p", "INITIALIZED", 10, "x"), "data.status"),
        (lambda: ProgressService.publish_progress("p", "RENDERING", 101, "x"), "data.progress"),
        (lambda: ProgressService.publish_progress("p", "RENDERING", -1, "x"), "data.progress"),
        (lambda: ProgressService.publish_progress("p", "RENDERING", True, "x"), "data.progress"),
        (
            lambda: ProgressService.publish_progress("p", "RENDERING", 5, "x" * 501),
            "data.current_stage",
        ),
        (
            lambda: ProgressService.publish_progress("p", "RENDERING", 5, "x", -3),
            "data.estimated_remaining",
        ),
        (
            lambda: ProgressService.publish_stage_change("p", "NOWHERE", "RENDERING", 5),
            "data.previous_stage",
        ),
        (
            lambda: ProgressService.publish_stage_change("p", "RENDERING", "INITIALIZED", 5),
            "data.current_stage",
        ),
        (
            lambda: ProgressService.publish_stage_change("p", "INITIALIZED", "RENDERING", 200),
            "data.progress",
        ),
        (lambda: ProgressService.publish_log("p", "LOUD", "x"), "data.level"),
        (lambda: ProgressService.publish_log("p", "INFO", "x" * 8193), "data.message"),
        (lambda: ProgressService.publish_error("p", "NOPE", "x", "RENDERING"), "data.error_code"),
        (lambda: ProgressService.publish_error("p", "RENDER_ERROR", "x", "LATER"), "data.stage"),
        (
            lambda: ProgressService.publish_error("p", "RENDER_ERROR", "x", "RENDERING", 5, 3),
            "data.retry_count",
        ),
        (lambda: ProgressService.publish_complete("p", "DONE"), "data.status"),
        (
            lambda: ProgressService.publish_complete("p", "COMPLETED", "javascript:alert(1)"),
            "data.youtube_url",
        ),
        (lambda: ProgressService.publish_log("bad id!", "INFO", "x"), "project_id"),
    ],
)
def test_a_bad_argument_is_a_value_error_naming_the_field(call: object, field: str) -> None:
    with pytest.raises(ValueError, match=field) as raised:
        call()  # type: ignore[operator]
    assert isinstance(raised.value, InvalidEvent)
    assert raised.value.field == field


def test_configure_takes_exactly_the_configs_fields_by_keyword() -> None:
    import dataclasses
    import inspect

    parameters = inspect.signature(progress_hub.configure).parameters
    assert list(parameters) == [f.name for f in dataclasses.fields(progress_hub.Config)]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert all(p.annotation is not inspect.Parameter.empty for p in parameters.values())
    before = progress_hub.configure()
    # mypy --strict flags the typo (the ignore below would be unused otherwise) ...
    with pytest.raises(TypeError, match="redis_ur"):
        progress_hub.configure(redis_ur="redis://elsewhere")  # type: ignore[call-arg]
    # ... and it changed nothing.
    assert progress_hub.configure() == before
