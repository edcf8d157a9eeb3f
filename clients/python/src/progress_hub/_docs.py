"""The allowed values in `ProgressService`'s docstrings, filled in at import from the
same constants the validation uses (`_event`, the error catalog of `contract/`), so
that `help(ProgressService.publish_progress)` lists exactly what a publish accepts and
cannot drift from it."""

from __future__ import annotations

from typing import Any

from . import _contract, _event

#: What every publish may raise (a method's docstring ends with it: `help()` shows it).
_RAISES = """Raises:
            progress_hub.InvalidEvent: an argument is not allowed (a ``ValueError``; ``.field``
                names it); nothing was sent.
            progress_hub.PublishUnavailable: Redis (or the hub, in HTTP mode) stayed out of
                reach for the whole ``retry_for``.
            progress_hub.StaleClaim: in a Celery ``ProgressTask`` run that a newer run of the
                job superseded, or after the job completed.
            progress_hub.PublishRefused: HTTP mode: the hub refused the event (401, 403, 422).
            progress_hub.PublishError: any other refusal (the base of the three above)."""


def allowed_values() -> dict[str, str]:
    """Each closed set, as a docstring shows it: `A`, `B`, `C`."""

    def listed(values: Any) -> str:
        return ", ".join(f"``{v}``" for v in values)

    return {
        "stages": listed(_event.STAGES),
        "previous_stages": listed(_event.PREVIOUS_STAGES),
        "levels": listed(_event.LEVELS),
        "complete_statuses": listed(_event.COMPLETE_STATUSES),
        "error_codes": listed(_contract.error_catalog()),
        "max_stage_text": str(_event.MAX_STAGE_TEXT),
        "max_message": str(_event.MAX_MESSAGE),
        "max_url": str(_event.MAX_URL),
        "raises": _RAISES,
    }


def fill(cls: type) -> type:
    """Fills `{stages}`, `{levels}`, ... into the docstrings of `cls` and its static
    methods (no-op under `python -OO`, which drops docstrings)."""
    values = allowed_values()
    if cls.__doc__:
        cls.__doc__ = cls.__doc__.format_map(values)
    for member in vars(cls).values():
        function = getattr(member, "__func__", None)
        if function is not None and function.__doc__:
            function.__doc__ = function.__doc__.format_map(values)
    return cls
