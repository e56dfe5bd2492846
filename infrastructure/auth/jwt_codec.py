"""JWT access tokens and WS tickets: one pinned algorithm, every registered claim required and checked.

A WS ticket is a token of its own audience (``{aud}:ws-ticket``, so it is never accepted as an access
token nor the other way round), valid ``ws_ticket_ttl_seconds``, carrying the access token it was made
from (``sid``, ``sexp``): a socket opened with it ends when that access token is revoked or expires.
Single use is kept in PostgreSQL (``SessionRecord.use_ticket``), not in Redis.

Clock leeway: ``LEEWAY_SECONDS`` on ``exp`` and ``iat``, the skew tolerated between the node that
issued a token and the node checking it. Nodes must run NTP; a node further off refuses tokens the
others issued (``iat`` in its future) or accepts them a little past expiry.

Access tokens verified lately are remembered, token -> claims (``VERIFIED_KEPT`` at most, the oldest
forgotten first): a client presents the same token on every request and every reconnect until it
refreshes, and pyjwt's check costs 36-38 µs on a quiet machine, much of it preparing the key again
each time (it parses the secret as JSON to refuse a JWK passed as a secret, an exception each time).
That was a tenth of an API node's CPU in a reconnect storm. A remembered token is the same bytes
that passed every check, signature included, so only its expiry can change: that is checked on every
use. Failures are not remembered. Tickets are single use, so they are not remembered either.
Revocation is not this module's: every use of a token is still checked against PostgreSQL
(``SessionRecord.check``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import jwt

from domain.errors import Unauthorized
from infrastructure.settings import AuthSettings

REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "iss", "jti"]
TICKET_CLAIMS = [*REQUIRED_CLAIMS, "sid", "sexp"]
#: Tolerated clock skew between nodes (seconds), on exp and iat.
LEEWAY_SECONDS = 5
#: Access tokens remembered as verified, per process (~0.6 KiB each).
VERIFIED_KEPT = 10_000


@dataclass(frozen=True)
class AccessClaims:
    user_id: UUID
    jti: str
    expires_at: datetime


@dataclass(frozen=True)
class TicketClaims:
    ticket_id: str
    expires_at: datetime
    #: The access token the ticket was issued with; the socket lives as long as it does.
    session: AccessClaims


class JwtCodec:
    def __init__(self, settings: AuthSettings, *, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._clock = clock
        #: token -> (claims, the time past which it is refused: ``exp`` plus the leeway), oldest first.
        self._verified: dict[str, tuple[AccessClaims, float]] = {}
        self._algorithm = settings.jwt_algorithm
        if self._algorithm == "HS256":
            self._signing_key: str = settings.jwt_secret
            self._verify_key: str = settings.jwt_secret
        else:
            self._signing_key = settings.jwt_private_key
            self._verify_key = settings.jwt_public_key

    def issue(self, user_id: UUID, now: datetime) -> tuple[str, int]:
        """A new access token and its lifetime in seconds."""
        if not self._signing_key:
            raise RuntimeError("this node verifies tokens but has no private key to issue them")
        ttl = self._settings.access_ttl_seconds
        claims = {
            "sub": str(user_id),
            "iat": now,
            "exp": now + timedelta(seconds=ttl),
            "jti": secrets.token_urlsafe(16),
            "iss": self._settings.jwt_issuer,
            "aud": self._settings.jwt_audience,
        }
        return jwt.encode(claims, self._signing_key, algorithm=self._algorithm), ttl

    def issue_ticket(self, session: AccessClaims, now: datetime) -> tuple[str, int]:
        """A single-use WS ticket for the holder of ``session`` (never outliving it)."""
        if not self._signing_key:
            raise RuntimeError("this node verifies tokens but has no private key to issue them")
        ttl = self._settings.ws_ticket_ttl_seconds
        claims = {
            "sub": str(session.user_id),
            "iat": now,
            "exp": min(now + timedelta(seconds=ttl), session.expires_at),
            "jti": secrets.token_urlsafe(16),
            "iss": self._settings.jwt_issuer,
            "aud": self._ticket_audience,
            "sid": session.jti,
            "sexp": int(session.expires_at.timestamp()),
        }
        return jwt.encode(claims, self._signing_key, algorithm=self._algorithm), ttl

    def verify(self, token: str) -> AccessClaims:
        """Decode and check signature, algorithm, exp, iat, iss, aud; any failure is one Unauthorized.
        A token verified lately is only checked for expiry (module docstring)."""
        known = self._verified.get(token)
        if known is not None:
            if self._clock() < known[1]:
                return known[0]
            del self._verified[token]
            raise Unauthorized("invalid or expired token")
        decoded = self._decode(token, self._settings.jwt_audience, REQUIRED_CLAIMS, "invalid or expired token")
        claims = AccessClaims(user_id=UUID(decoded["sub"]), jti=str(decoded["jti"]), expires_at=_time(decoded["exp"]))
        if len(self._verified) >= VERIFIED_KEPT:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (claims, claims.expires_at.timestamp() + LEEWAY_SECONDS)
        return claims

    def verify_ticket(self, ticket: str) -> TicketClaims:
        claims = self._decode(ticket, self._ticket_audience, TICKET_CLAIMS, "invalid, used or expired ticket")
        try:
            user_id, expires_at = UUID(claims["sub"]), _time(claims["sexp"])
            session = AccessClaims(user_id=user_id, jti=str(claims["sid"]), expires_at=expires_at)
        except (ValueError, TypeError, OverflowError) as exc:
            raise Unauthorized("invalid, used or expired ticket") from exc
        return TicketClaims(ticket_id=str(claims["jti"]), expires_at=_time(claims["exp"]), session=session)

    @property
    def _ticket_audience(self) -> str:
        return f"{self._settings.jwt_audience}:ws-ticket"

    def _decode(self, token: str, audience: str, required: list[str], failure: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._verify_key,
                algorithms=[self._algorithm],  # never taken from the token header
                audience=audience,
                issuer=self._settings.jwt_issuer,
                options={"require": required},
                leeway=LEEWAY_SECONDS,
            )
            UUID(claims["sub"])
            _time(claims["exp"])
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
            raise Unauthorized(failure) from exc
        return claims


def _time(timestamp: Any) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
