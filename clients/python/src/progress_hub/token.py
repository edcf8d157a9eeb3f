"""Access tokens for a hub that runs with `--auth-secret`: the HS256 JWT a backend mints
for a browser (to watch a project) or a worker (to publish in HTTP mode), with the
claims the hub checks (`src/auth.rs`; the table is in docs/PROTOCOL.md). Standard
library only: a JWT of this one algorithm is two base64url JSON parts and an HMAC.

    token = progress_hub.mint_token(secret, ["proj-42"], ttl=3600)          # watch
    token = progress_hub.mint_token(secret, ["*"], publish=True, ttl=3600)  # publish
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence

__all__ = ["mint_token"]


def _part(value: dict[str, object]) -> bytes:
    text = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(text).rstrip(b"=")


def mint_token(
    secret: str,
    projects: Sequence[str],
    *,
    publish: bool = False,
    ttl: float = 3600,
    not_before: float | None = None,
) -> str:
    """An HS256 JWT the hub accepts with `--auth-secret secret`.

    Args:
        secret: the hub's `--auth-secret` (`HUB_AUTH_SECRET`); not empty.
        projects: the project ids it may watch (and publish to); ``"*"`` for all.
        publish: adds ``scope: "publish"``: may publish events and start jobs.
        ttl: seconds until it expires (the ``exp`` claim); > 0.
        not_before: a Unix time before which the hub refuses it (the ``nbf`` claim).

    Raises:
        ValueError: an empty secret or project list, a project that is not a string, a
            ttl that is not a positive number.
    """
    if not isinstance(secret, str) or not secret:
        raise ValueError("secret: must be the hub's non-empty --auth-secret")
    if isinstance(projects, str) or not projects:
        raise ValueError('projects: must be a non-empty list of project ids (or ["*"])')
    if not all(isinstance(p, str) for p in projects):
        raise ValueError("projects: every project id must be a string")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
        raise ValueError(f"ttl: must be a positive number of seconds (got {ttl!r})")
    claims: dict[str, object] = {"projects": list(projects), "exp": int(time.time() + ttl)}
    if publish:
        claims["scope"] = "publish"
    if not_before is not None:
        claims["nbf"] = int(not_before)
    signing_input = _part({"alg": "HS256", "typ": "JWT"}) + b"." + _part(claims)
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()
