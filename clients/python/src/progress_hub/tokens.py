"""Access tokens for a hub that runs with `--auth-secret`, minted in Python: the HS256
JWT a backend hands a page (to watch a project) or a worker (to publish in HTTP mode),
with the claims `progress-hub token` writes and the hub checks (`crates/hub/src/auth.rs`; the table
is in docs/PROTOCOL.md "Access control"). Standard library only: a JWT of this one
algorithm is two base64url JSON parts and an HMAC-SHA256. Project ids are checked by the
rule the SDK's events use (`_event`, the hub's `^[A-Za-z0-9_-]{1,64}$`).

    from progress_hub import tokens
    page_token = tokens.mint(secret, projects=["proj-42"], ttl=3600)          # watch
    worker_token = tokens.mint(secret, projects=["*"], scope="publish")       # publish

The claims: `projects` (always), `scope` (`"publish"` or `"control"`; none for
`"watch"`, as the hub's CLI writes it), `tags` (when given), `exp`, and `nbf` (when
`not_before` is given). No `aud`: the hub expects none (a token with one is refused).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import time
import warnings
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Literal

#: A project id as the hub's (`crates/hub/src/wire/project_id.rs`); `*` is allowed besides.
from ._event import _PROJECT_ID

__all__ = ["InvalidTokenArgument", "Scope", "mint", "mint_token"]

#: What a token grants: `watch` (read its projects), `publish` (also publish events and
#: start jobs), `control` (minted as the contract fixes it; the hub grants it what a
#: watch token gets until control actions exist).
Scope = Literal["watch", "publish", "control"]
SCOPES: tuple[str, ...] = ("watch", "publish", "control")

#: A tag (issue #26 names them like `user:7`; the hub has no tag rules yet): printable
#: text, no spaces, at most this long.
_TAG = re.compile(r"[!-~]{1,128}")
#: The hub reads `exp`/`nbf` as unsigned 64-bit seconds: a larger one is not a token.
_U64_MAX = 2**64 - 1


class InvalidTokenArgument(ValueError):
    """An argument of `mint` is not one the hub would accept; `argument` names it."""

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{argument}: {problem}")
        self.argument = argument


def _part(value: dict[str, object]) -> bytes:
    text = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(text).rstrip(b"=")


def _ids(argument: str, values: object, pattern: re.Pattern[str], wildcard: bool) -> list[str]:
    """`values` as a list of strings, each one matching `pattern` (or `*`)."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidTokenArgument(
            argument, f"must be a list of strings, not {type(values).__name__} ({values!r})"
        )
    out = []
    for value in values:
        if not isinstance(value, str):
            raise InvalidTokenArgument(
                argument, f"every item must be a string (got {type(value).__name__} {value!r})"
            )
        if not (wildcard and value == "*") and not pattern.fullmatch(value):
            allowed = f"^{pattern.pattern}$" + (' or "*"' if wildcard else "")
            raise InvalidTokenArgument(argument, f"{value!r} must match {allowed}")
        out.append(value)
    return out


def _seconds(argument: str, value: object) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTokenArgument(argument, f"must be a number of seconds (got {value!r})")
    if not math.isfinite(value):
        raise InvalidTokenArgument(argument, f"must be a finite number of seconds (got {value!r})")
    return float(value)


def _unix(argument: str, value: float) -> int:
    whole = int(value)
    if not 0 <= whole <= _U64_MAX:
        raise InvalidTokenArgument(argument, f"must be a Unix time the hub can read (got {whole})")
    return whole


def mint(
    secret: str,
    *,
    projects: Sequence[str] = (),
    tags: Sequence[str] = (),
    scope: Scope = "watch",
    ttl: float | timedelta = 3600,
    not_before: float | None = None,
) -> str:
    """An HS256 JWT the hub accepts when it runs with `--auth-secret secret`.

    Args:
        secret: the hub's `--auth-secret` (`HUB_AUTH_SECRET`); not empty.
        projects: the project ids it may watch (and publish to, with that scope); ``"*"``
            for all. Each as the hub's ids: ``^[A-Za-z0-9_-]{1,64}$``.
        tags: tags whose projects it may watch (the ``tags`` claim; printable ASCII without
            spaces, at most 128 characters, e.g. ``user:7``; the hub's tags are
            ``^[A-Za-z0-9_.:@-]{1,64}$``, another never matches). The hub lets such a
            token list the tag's projects (``GET /api/v1/projects?tag=``); watching a
            project still needs ``projects``.
        scope: ``"watch"`` (no ``scope`` claim), ``"publish"`` (may also publish events and
            start jobs), or ``"control"`` (granted what a watch token is, for now).
        ttl: seconds (or a ``timedelta``) until it expires (the ``exp`` claim); > 0.
        not_before: a Unix time before which the hub refuses it (the ``nbf`` claim).

    Raises:
        progress_hub.tokens.InvalidTokenArgument: (a ``ValueError``; ``.argument`` names
            it) an empty secret; neither projects nor tags; a project or tag that is not a
            string or not an id; an unknown scope; a ttl that is not a finite number > 0.
    """
    if not isinstance(secret, str) or not secret:
        raise InvalidTokenArgument("secret", "must be the hub's non-empty --auth-secret")
    project_ids = _ids("projects", projects, _PROJECT_ID, wildcard=True)
    tag_ids = _ids("tags", tags, _TAG, wildcard=False)
    if not project_ids and not tag_ids:
        raise InvalidTokenArgument(
            "projects", 'a token grants nothing without projects (or tags); ["*"] is all'
        )
    if not isinstance(scope, str) or scope not in SCOPES:
        raise InvalidTokenArgument("scope", f"must be one of {', '.join(SCOPES)} (got {scope!r})")
    seconds = _seconds("ttl", ttl)
    if not seconds > 0:
        raise InvalidTokenArgument("ttl", f"must be > 0 seconds (got {ttl!r})")
    claims: dict[str, object] = {"projects": project_ids}
    if scope != "watch":
        claims["scope"] = scope
    if tag_ids:
        claims["tags"] = tag_ids
    claims["exp"] = _unix("ttl", time.time() + seconds)
    if not_before is not None:
        claims["nbf"] = _unix("not_before", _seconds("not_before", not_before))
    signing_input = _part({"alg": "HS256", "typ": "JWT"}) + b"." + _part(claims)
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


def mint_token(
    secret: str,
    projects: Sequence[str],
    *,
    publish: bool = False,
    ttl: float = 3600,
    not_before: float | None = None,
) -> str:
    """Deprecated: use `progress_hub.tokens.mint` (``scope="publish"`` for ``publish=True``).
    The same token as ``mint(secret, projects=projects, ...)``.

    Raises:
        progress_hub.tokens.InvalidTokenArgument: as `mint` (a ``ValueError``).
    """
    warnings.warn(
        "progress_hub.mint_token is deprecated: use progress_hub.tokens.mint(secret, "
        'projects=[...], scope="publish" | "watch", ttl=...)',
        DeprecationWarning,
        stacklevel=2,
    )
    return mint(
        secret,
        projects=projects,
        scope="publish" if publish else "watch",
        ttl=ttl,
        not_before=not_before,
    )
