"""Token auth for the server: bearer tokens with scopes, a short cache, per-token rate limits.

A request carries ``Authorization: Bearer <secret>``. The secret is checked by a verifier
(``secret -> token info or None``; the server wires :func:`keel.store.tokens.verify_token`) whose
answer is cached for ``ttl`` seconds, so a request costs a dictionary lookup, not a database
query, and a revoked token stops working within ``ttl``. Unknown secrets are cached too (a
bounded cache, emptied when full), so guessing does not turn into database load.

Scopes: ``predict`` (predict, infer, features), ``read`` (metadata, metrics, the OpenAPI
document), ``admin`` (implies every scope). Health endpoints need none. A token with
``rate_limit_per_minute`` gets a token bucket of that size refilled continuously; an empty
bucket answers 429 with ``Retry-After``. A worker of ``keel serve --workers N`` has
:attr:`Authenticator.share` ``N``: its bucket refills at ``1/N`` of the rate and holds ``1/N``
of the burst (at least one request), so the N workers together never exceed the limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from keel.serve.limits import Forbidden, TooManyRequests, Unauthorized

__all__ = ["TRUST_S", "Authenticator", "Token", "Verifier"]

TRUST_S = 5.0
"""Seconds a server trusts a token it verified (``keel tokens revoke`` takes effect within it)."""

_CACHE_SIZE = 10_000
_MEMO_HEADER = 256  # longest Authorization header remembered as it is (longer: by secret)


class Token(Protocol):
    """What the server needs of a verified token (:class:`keel.store.tokens.TokenInfo`)."""

    @property
    def id(self) -> int | str: ...
    @property
    def name(self) -> str: ...
    @property
    def scopes(self) -> tuple[str, ...]: ...
    @property
    def rate_limit_per_minute(self) -> int | None: ...


Verifier = Callable[[str], Token | None]


@dataclass
class _Bucket:
    tokens: float
    at: float


class Authenticator:
    """Checks a request's bearer token for a scope, with a cache and rate limits.

    Args:
        verify: Secret -> the token, or None when it is unknown, revoked or expired.
        ttl: Seconds a verification is trusted (revocation is visible within it).
        clock: Monotonic seconds (injectable for tests).
    """

    def __init__(
        self, verify: Verifier, *, ttl: float = TRUST_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.verify = verify
        self.ttl = ttl
        self.clock = clock
        # a verification, by Authorization header (a short one: the header every request of a
        # client repeats, one lookup) or by secret (a long header, parsed each time)
        self._cache: dict[bytes | str, tuple[Token | None, float]] = {}
        self._buckets: dict[int | str, _Bucket] = {}
        self.share = 1  # workers sharing each token's rate (keel.serve.fleet.join_fleet)

    def check(self, authorization: bytes | None, scope: str) -> Token:
        """The token of an ``Authorization`` header if it grants ``scope``.

        Raises:
            Unauthorized: No bearer token, or an unknown, revoked or expired one (401).
            Forbidden: The token lacks the scope (403).
            TooManyRequests: The token's rate limit is spent (429, with Retry-After).
        """
        now = self.clock()
        cached = None if authorization is None else self._cache.get(authorization)
        if cached is None or cached[1] <= now:
            cached = self._verified(authorization, scope, now)
        token = cached[0]
        if token is None:
            raise Unauthorized(
                f"the bearer token is unknown, revoked or expired; this route needs a token "
                f"with the '{scope}' scope (create one with 'keel tokens create NAME --scope "
                f"{scope}').",
                field="authorization",
            )
        if scope not in token.scopes and "admin" not in token.scopes:
            granted = ", ".join(token.scopes) or "none"
            raise Forbidden(
                f"token '{token.name}' lacks the '{scope}' scope this route needs "
                f"(it has: {granted}); create a token with '--scope {scope}'.",
                field="authorization",
            )
        if token.rate_limit_per_minute is not None:
            self._spend(token, token.rate_limit_per_minute, now)
        return token

    def _verified(
        self, authorization: bytes | None, scope: str, now: float
    ) -> tuple[Token | None, float]:
        """The header's secret verified (a malformed header raises, never remembered), and
        remembered for ``ttl`` by header when short, else by secret."""
        secret = _bearer(authorization, scope)  # raises for a missing or malformed header
        key: bytes | str = secret
        if authorization is not None and len(authorization) <= _MEMO_HEADER:
            key = authorization
        cached = self._cache.get(key)
        if cached is None or cached[1] <= now:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            cached = self._cache[key] = (self.verify(secret), now + self.ttl)
        return cached

    def _spend(self, token: Token, per_minute: int, now: float) -> None:
        burst = max(1.0, per_minute / self.share)
        bucket = self._buckets.get(token.id)
        if bucket is None:
            bucket = self._buckets[token.id] = _Bucket(burst, now)
        rate = per_minute / 60.0 / self.share
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens < 1.0:
            wait = math.ceil((1.0 - bucket.tokens) / rate) if rate > 0 else 60
            raise TooManyRequests(
                f"token '{token.name}' is limited to {per_minute} requests per minute; "
                f"retry after {wait} s.",
                retry_after=wait,
            )
        bucket.tokens -= 1.0


def _bearer(authorization: bytes | None, scope: str) -> str:
    if authorization is None:
        raise Unauthorized(
            f"this route needs a token with the '{scope}' scope: send 'Authorization: Bearer "
            f"<token>' (create one with 'keel tokens create NAME --scope {scope}').",
            field="authorization",
        )
    scheme, _, secret = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized(
            "the Authorization header must be 'Bearer <token>'.", field="authorization"
        )
    return secret.strip()
