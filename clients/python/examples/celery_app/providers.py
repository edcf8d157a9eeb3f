"""Mock providers of the five stages: each step takes `mock_delay` seconds, and the
provider of a stage can be told to fail its first n attempts (a transient error, as
a rate-limited API would)."""

from __future__ import annotations

import time


class ProviderError(Exception):
    """A provider call failed; `error_code` is the catalog's code for it."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code

    def __reduce__(self) -> tuple[type[ProviderError], tuple[str, str]]:
        # Celery pickles a task's exception; keep the code.
        return (type(self), (self.error_code, str(self)))


#: The catalog code each stage's provider fails with.
ERROR_CODES = {
    "SCRIPT_GENERATING": "GEMINI_API_ERROR",
    "ASSETS_GENERATING": "STABILITY_AI_ERROR",
    "RENDERING": "RENDER_ERROR",
    "THUMBNAIL_GENERATING": "STABILITY_AI_ERROR",
    "UPLOADING": "YOUTUBE_API_ERROR",
}


def call(stage: str, attempt: int, inject_failures: dict[str, int], mock_delay: float) -> None:
    """One provider call of `stage` on its `attempt`-th try (0-based)."""
    time.sleep(mock_delay)
    if attempt < inject_failures.get(stage, 0):
        raise ProviderError(
            ERROR_CODES[stage], f"mock {stage} provider failed (attempt {attempt + 1})"
        )
