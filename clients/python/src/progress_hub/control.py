"""Stopping a job from the backend: `cancel(project_id)` asks the hub
(`POST /api/v1/projects/{id}/cancel`, docs/PROTOCOL.md "Cancelling a job").

    from progress_hub.control import cancel
    cancel("p-42", hub_url="http://hub:8000", token=backend_token)

The hub's own worker stops before its next provider call; a Celery job (a chain of
`ProgressTask`s) is ended by the hub at once, and its tasks stop at their next publish
(or `ProgressTask.is_cancelled()`), and the chain's next tasks do not start. Either way
the run ends with one `complete` of status `CANCELLED`. Standard library only: a backend
that publishes through Redis needs no HTTP client for this one call.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["CancelRefused", "cancel"]


class CancelRefused(Exception):
    """The hub did not accept the cancel: `status` 409 (`JOB_ENDED`: the run already
    ended), 404 (`NO_JOB`: the hub knows no run of the project), 400 (an invalid id),
    401/403 (the token has neither the publish nor the control scope). `code` is the
    hub's error code, when it gave one."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(f"the hub refused the cancel ({status} {code or ''}): {message}")
        self.status = status
        self.code = code


def cancel(
    project_id: str,
    *,
    hub_url: str | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Asks the hub to cancel the project's job; returns its answer
    (`{"project_id": ..., "job_id": ...}`, `job_id` None for a run the hub's workers do
    not carry). `hub_url` and `token` default to `HUB_URL` and `HUB_TOKEN`. Raises
    `CancelRefused` when the hub refuses, `OSError` when it cannot be reached."""
    base = hub_url or os.environ.get("HUB_URL")
    if not base:
        raise ValueError("cancel needs the hub's URL (hub_url= or HUB_URL)")
    token = token if token is not None else os.environ.get("HUB_TOKEN")
    path = "/api/v1/projects/" + urllib.parse.quote(project_id, safe="") + "/cancel"
    request = urllib.request.Request(base.rstrip("/") + path, method="POST", data=b"")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"{}")
            return answer
    except urllib.error.HTTPError as refused:
        try:
            error = json.loads(refused.read() or b"{}").get("error", {})
        except ValueError:
            error = {}
        raise CancelRefused(
            refused.code, error.get("code"), error.get("message", refused.reason)
        ) from None
