"""Validation matches the hub's: a bad argument is a ValueError naming the field, and
nothing is sent."""

from __future__ import annotations

import re

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


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("retry_for", "3", "retry_for: must be a number of seconds"),
        ("retry_for", -1, "retry_for: must be >= 0"),
        ("coalesce_window", None, "coalesce_window: must be a number of seconds"),
        ("command_timeout", 0, "command_timeout: must be > 0"),
        ("history_len", 2.5, "history_len: must be an integer"),
        ("history_bytes", True, "history_bytes: must be an integer"),
        ("retention", -1, "retention: must be >= 1"),
        ("redis_url", 6379, "redis_url: must be a string"),
        ("redis_url", "redis+cluster://", "redis_url: no seed node"),
        ("hub_url", 8080, "hub_url: must be a string or None"),
        ("token", b"secret", "token: must be a string or None"),
        ("locale", "fr", "locale: unknown locale"),
        ("command_timeout", float("inf"), "command_timeout: must be a finite number"),
        ("command_timeout", float("nan"), "command_timeout: must be a finite number"),
        ("command_timeout", 1e30, "command_timeout: must be <= 3600"),
        ("retry_for", float("inf"), "retry_for: must be a finite number"),
        ("retry_for", 1e30, "retry_for: must be <= 604800"),
        ("coalesce_window", float("-inf"), "coalesce_window: must be a finite number"),
        ("coalesce_window", 1e9, "coalesce_window: must be <= 3600"),
        ("history_len", 10**30, "history_len: must be <= 1000000000"),
        ("history_bytes", 2**64, "history_bytes: must be <= 1099511627776"),
        ("active_ttl", 10**12, "active_ttl: must be <= 315360000"),
        ("retention", 10**12, "retention: must be <= 315360000"),
        ("hub_url", "127.0.0.1:8080", "hub_url: must be an http:// or https:// URL"),
        ("hub_url", "ftp://hub.example", "hub_url: must be an http:// or https:// URL"),
        ("hub_url", "http://", "hub_url: names no host"),
        ("hub_url", "http://:8080", "hub_url: names no host"),
        ("hub_url", "http://hub:99999", "hub_url: port"),
        ("hub_url", "http://hub/?a=1", "hub_url: must have no query or fragment"),
        ("hub_url", "http://hub/#top", "hub_url: must have no query or fragment"),
        ("hub_url", "http://hub\nx/", "hub_url: must not contain whitespace"),
        ("hub_url", "", "hub_url: must be an http:// or https:// URL"),
    ],
)
def test_configure_checks_its_arguments_at_run_time(setting: str, value: object, said: str) -> None:
    before = progress_hub.configure()
    with pytest.raises(progress_hub.InvalidConfig, match=re.escape(said)) as raised:
        progress_hub.configure(**{setting: value})  # type: ignore[arg-type]
    assert raised.value.setting == setting
    assert isinstance(raised.value, ValueError)
    # ... and it changed nothing.
    assert progress_hub.configure() == before


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HUB_PUBLISH_RETRY_FOR", "abc"),
        ("HUB_PUBLISH_TIMEOUT", "soon"),
        ("HUB_HISTORY_LEN", "many"),
        ("HUB_HISTORY_BYTES", "1.5"),
        ("HUB_RETENTION", "forever"),
        ("HUB_RETENTION", "7 days ago"),
        ("HUB_RETENTION", "1.h"),
        ("HUB_RETENTION", "-5s"),
        ("HUB_RETENTION", "99999999999999999999999y"),
        ("HUB_PUBLISH_TIMEOUT", "inf"),
        ("HUB_PUBLISH_TIMEOUT", "nan"),
        ("HUB_PUBLISH_RETRY_FOR", "1e30"),
        ("HUB_LOCALE", "fr"),
        ("HUB_URL", "hub.example:8080"),
    ],
)
def test_a_bad_environment_variable_is_named(variable: str, value: str) -> None:
    with pytest.raises(progress_hub.InvalidConfig, match=f"^{variable}=") as raised:
        progress_hub.config.from_env({variable: value})
    assert repr(value) in str(raised.value)


def test_a_project_id_that_is_not_a_string_is_told_so() -> None:
    with pytest.raises(InvalidEvent, match="project_id: must be a string") as raised:
        ProgressService.publish_log(42, "INFO", "x")  # type: ignore[arg-type]
    assert raised.value.field == "project_id"


def test_a_negative_estimate_is_told_its_bound_only() -> None:
    with pytest.raises(InvalidEvent, match=re.escape("must be >= 0 (got -5)")) as raised:
        ProgressService.publish_progress("p", "RENDERING", 5, "x", estimated_remaining=-5)
    assert "18446744073709551615" not in str(raised.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        # The hub's grammar (humantime, as `--retention` and `progress-hub token --ttl`).
        ("7d", 7 * 86400),
        ("1h 30m", 5400),
        ("1h30m", 5400),
        ("90s", 90),
        ("2 days 3hours", 2 * 86400 + 3 * 3600),
        ("15min", 900),
        ("1w", 7 * 86400),
        ("1.5h", 5400),
        ("1500ms", 1),
        ("  24h  ", 86400),
        # Whole seconds, as before.
        ("3600", 3600),
    ],
)
def test_hub_retention_reads_the_hubs_durations(text: str, seconds: int) -> None:
    assert progress_hub.config.from_env({"HUB_RETENTION": text}).retention == seconds


@pytest.mark.parametrize(
    ("variable", "text", "setting", "seconds"),
    [
        ("HUB_PUBLISH_TIMEOUT", "2.5", "command_timeout", 2.5),
        ("HUB_PUBLISH_TIMEOUT", "500ms", "command_timeout", 0.5),
        ("HUB_PUBLISH_RETRY_FOR", "2m", "retry_for", 120.0),
        ("HUB_PUBLISH_RETRY_FOR", "1h 30m", "retry_for", 5400.0),
    ],
)
def test_every_duration_variable_reads_the_hubs_durations(
    variable: str, text: str, setting: str, seconds: float
) -> None:
    assert getattr(progress_hub.config.from_env({variable: text}), setting) == seconds


def test_a_setting_given_to_configure_wins_over_a_bad_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from progress_hub import _sync

    monkeypatch.setattr(_sync, "_config", None)
    monkeypatch.setenv("HUB_RETENTION", "forever")
    monkeypatch.setenv("HUB_PUBLISH_TIMEOUT", "soon")
    config = progress_hub.configure(retention=60, command_timeout=1.5)
    assert (config.retention, config.command_timeout) == (60, 1.5)
    # A bad variable that nothing overrides is still named.
    monkeypatch.setattr(_sync, "_config", None)
    with pytest.raises(progress_hub.InvalidConfig, match=r"^HUB_PUBLISH_TIMEOUT='soon'"):
        progress_hub.configure(retention=60)
    monkeypatch.setattr(_sync, "_config", None)
