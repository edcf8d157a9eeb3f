"""Typed errors of the SDK. Invalid input is a `ValueError` (`InvalidEvent` naming the
event's field, `InvalidConfig` naming the setting); everything that goes wrong after
validation is a `PublishError`."""

from __future__ import annotations

from ._event import InvalidEvent

__all__ = [
    "InvalidConfig",
    "InvalidEvent",
    "PublishError",
    "PublishRefused",
    "PublishUnavailable",
    "StaleClaim",
    "WatchRefused",
]


class PublishError(Exception):
    """The event could not be published."""


class PublishUnavailable(PublishError):
    """Redis (or the hub, in HTTP mode) stayed unreachable for the whole retry budget.
    The event may or may not have landed (a timed-out attempt can still have reached
    Redis); a retry of the same call would publish it a second time."""


class StaleClaim(PublishError):
    """Refused: the job's claim was superseded (a retried or redelivered run took over)
    or the job has already completed. The run that got this is no longer the job's."""


class PublishRefused(PublishError):
    """The hub answered HTTP mode with a refusal (e.g. 401/403/422)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"hub refused the event ({status}): {body}")
        self.status = status


class InvalidConfig(ValueError):
    """A setting (of `configure`, `Config` or the environment) has the wrong type or
    range. `setting` names it; the message names the environment variable it came
    from, when it came from one."""

    def __init__(
        self, setting: str, problem: str, *, variable: str | None = None, value: str = ""
    ) -> None:
        where = setting if variable is None else f"{variable}={value!r} ({setting})"
        super().__init__(f"{where}: {problem}")
        self.setting = setting
        self.problem = problem
        self.variable = variable


class WatchRefused(Exception):
    """The hub refused a watch with an answer that retrying cannot change (400, 401,
    403, 404): `code` and `message` are the hub's error, `status` the HTTP status."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
