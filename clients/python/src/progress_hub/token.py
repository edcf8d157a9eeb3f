"""Deprecated home of `mint_token` (it shipped here): the tokens are minted by
`progress_hub.tokens` (`tokens.mint`); `mint_token` is its deprecated alias."""

from __future__ import annotations

from .tokens import mint_token

__all__ = ["mint_token"]
