"""JWT access tokens: one pinned algorithm, every registered claim required and checked."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import jwt

from domain.errors import Unauthorized
from infrastructure.settings import AuthSettings

REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "iss", "jti"]


@dataclass(frozen=True)
class AccessClaims:
    user_id: UUID
    jti: str
    expires_at: datetime


class JwtCodec:
    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
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

    def verify(self, token: str) -> AccessClaims:
        """Decode and check signature, algorithm, exp, iat, iss, aud; any failure is one Unauthorized."""
        try:
            claims = jwt.decode(
                token,
                self._verify_key,
                algorithms=[self._algorithm],  # never taken from the token header
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                options={"require": REQUIRED_CLAIMS},
                leeway=5,
            )
            return AccessClaims(
                user_id=UUID(claims["sub"]),
                jti=str(claims["jti"]),
                expires_at=datetime.fromtimestamp(claims["exp"]).astimezone(),
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise Unauthorized("invalid or expired token") from exc
