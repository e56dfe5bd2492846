"""Accounts and sessions: register, login, rotating refresh tokens, logout, WS tickets, token checks.

Every token check consults the session record in PostgreSQL (``SessionRecord``): a revoked token and
a deleted account's token are refused on every path, whatever state Redis is in.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import asyncpg
import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.errors import Conflict, InvalidInput, NotFound, Unauthorized
from domain.values import User, UserRole
from infrastructure.auth.jwt_codec import AccessClaims, JwtCodec
from infrastructure.auth.passwords import hash_password, verify_password
from infrastructure.auth.revocation import SessionRecord
from infrastructure.db.repositories import user_from_row
from infrastructure.db.tables import refresh_tokens, users
from infrastructure.settings import AuthSettings

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # Argon2 would hash megabytes happily; a cap keeps a login from being a CPU DoS
MAX_TICKET_CHARS = 1024  # a signed ticket is ~300 characters


class TokenPair(msgspec.Struct, frozen=True, kw_only=True):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"


def _hash_refresh(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AuthService:
    def __init__(self, engine: AsyncEngine, pool: asyncpg.Pool, settings: AuthSettings) -> None:
        self._engine = engine
        self._settings = settings
        self.jwt = JwtCodec(settings)
        self.sessions = SessionRecord(pool)
        self._admins = {e.lower() for e in settings.admin_emails}

    # -- accounts --------------------------------------------------------------------------------

    async def register(self, email: str, password: str, name: str) -> tuple[User, TokenPair]:
        email, name = email.strip(), name.strip()
        if not _EMAIL.match(email) or len(email) > 254:
            raise InvalidInput("email is not a valid address")
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise InvalidInput(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
        if not 1 <= len(name) <= 100:
            raise InvalidInput("name must be 1 to 100 characters")
        role = UserRole.ADMIN if email.lower() in self._admins else UserRole.USER
        password_hash = await hash_password(password)
        try:
            async with self._engine.begin() as conn:
                row = (
                    await conn.execute(
                        sa.insert(users)
                        .values(id=uuid4(), email=email, name=name, password_hash=password_hash, role=role.value)
                        .returning(users)
                    )
                ).one()
                user = user_from_row(row._mapping)
                pair = await self._new_pair(conn, user.id, family_id=uuid4())
        except IntegrityError as exc:
            raise Conflict("an account with this email already exists") from exc
        return user, pair

    async def login(self, email: str, password: str) -> tuple[User, TokenPair]:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(users).where(sa.func.lower(users.c.email) == email.strip().lower()))
            ).one_or_none()
        # Same work and same answer whether or not the email exists.
        if not await verify_password(None if row is None else row.password_hash, password[:MAX_PASSWORD]):
            raise Unauthorized("invalid email or password")
        assert row is not None
        async with self._engine.begin() as conn:
            return user_from_row(row._mapping), await self._new_pair(conn, row.id, family_id=uuid4())

    async def grant_admin(self, email: str) -> User:
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.update(users)
                    .where(sa.func.lower(users.c.email) == email.strip().lower())
                    .values(role=UserRole.ADMIN.value)
                    .returning(users)
                )
            ).one_or_none()
        if row is None:
            raise NotFound(f"no user with email {email}")
        return user_from_row(row._mapping)

    async def get_user(self, user_id: UUID) -> User:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).one_or_none()
        if row is None:
            raise Unauthorized("the token's user no longer exists")
        return user_from_row(row._mapping)

    # -- tokens ----------------------------------------------------------------------------------

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate: the presented token is used up and a new pair issued in the same family.

        Presenting a token that was already used means it leaked (or a client raced itself): the
        whole family is revoked, logging that session out everywhere (OAuth 2.0 BCP, refresh rotation).
        """
        digest = _hash_refresh(refresh_token)
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(refresh_tokens).where(refresh_tokens.c.token_hash == digest).with_for_update()
                )
            ).one_or_none()
            if row is None or row.revoked_at is not None or row.expires_at <= datetime.now(UTC):
                raise Unauthorized("invalid or expired refresh token")
            if row.used_at is not None:
                await self._revoke_family(conn, row.family_id)
                reused = True
            else:
                await conn.execute(
                    sa.update(refresh_tokens).where(refresh_tokens.c.token_hash == digest).values(used_at=sa.func.now())
                )
                reused = False
                pair = await self._new_pair(conn, row.user_id, family_id=row.family_id)
        if reused:  # raised after commit so the family revocation sticks
            raise Unauthorized("refresh token was already used; the session has been revoked")
        return pair

    async def logout(self, claims: AccessClaims, refresh_token: str | None) -> None:
        """Refuse this access token's jti from now on; with its refresh token, end that session too."""
        await self.sessions.revoke(claims.jti, claims.expires_at)
        if refresh_token:
            async with self._engine.begin() as conn:
                family = (
                    await conn.execute(
                        sa.select(refresh_tokens.c.family_id).where(
                            refresh_tokens.c.token_hash == _hash_refresh(refresh_token),
                            refresh_tokens.c.user_id == claims.user_id,
                        )
                    )
                ).scalar_one_or_none()
                if family is not None:
                    await self._revoke_family(conn, family)

    async def authenticate(self, token: str) -> AccessClaims:
        claims = self.jwt.verify(token)
        await self._require_live(claims)
        return claims

    async def _require_live(self, claims: AccessClaims) -> None:
        user_exists, revoked = await self.sessions.check(claims.user_id, claims.jti)
        if revoked:
            raise Unauthorized("this token has been revoked")
        if not user_exists:
            raise Unauthorized("the token's account no longer exists")

    async def issue_ws_ticket(self, session: AccessClaims) -> tuple[str, int]:
        return self.jwt.issue_ticket(session, datetime.now(UTC))

    async def redeem_ws_ticket(self, ticket: str) -> AccessClaims:
        """Single use, recorded in PostgreSQL: two sockets cannot share one ticket, even after Redis
        lost or rewound its data. Returns the access session the ticket was issued from."""
        if not 0 < len(ticket) <= MAX_TICKET_CHARS:
            raise Unauthorized("invalid, used or expired ticket")
        claims = self.jwt.verify_ticket(ticket)
        if not await self.sessions.use_ticket(claims.ticket_id, claims.expires_at, claims.session.user_id):
            raise Unauthorized("invalid, used or expired ticket")
        await self._require_live(claims.session)
        return claims.session

    async def _new_pair(self, conn: AsyncConnection, user_id: UUID, *, family_id: UUID) -> TokenPair:
        now = datetime.now(UTC)
        access, ttl = self.jwt.issue(user_id, now)
        refresh = secrets.token_urlsafe(32)
        await conn.execute(
            sa.insert(refresh_tokens).values(
                token_hash=_hash_refresh(refresh),
                user_id=user_id,
                family_id=family_id,
                expires_at=now + timedelta(seconds=self._settings.refresh_ttl_seconds),
            )
        )
        return TokenPair(access_token=access, refresh_token=refresh, expires_in=ttl)

    @staticmethod
    async def _revoke_family(conn: AsyncConnection, family_id: UUID) -> None:
        await conn.execute(
            sa.update(refresh_tokens)
            .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=sa.func.now())
        )
