"""Accounts and sessions over REST: register, login, refresh rotation, logout revocation, tickets, token checks."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from infrastructure.bootstrap import Services
from infrastructure.db.tables import users
from infrastructure.settings import Settings
from tests.conftest import TEST_JWT_SECRET, unique_email
from tests.integration.conftest import MakeUser, assert_error
from tests.integration.conftest import TestUser as User


def _claims(user_id: uuid.UUID, **overrides: Any) -> dict[str, Any]:
    """Claims exactly as the server issues them; ``None`` drops a claim."""
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": str(user_id),
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "jti": secrets.token_urlsafe(16),
        "iss": "parley",
        "aud": "parley-api",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(claims: dict[str, Any], secret: str = TEST_JWT_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _me(client: AsyncTestClient[Any], headers: dict[str, str]) -> Any:
    return await client.get("/api/me", headers=headers)


# -- register and login ------------------------------------------------------------------------------


async def test_register_returns_201_with_user_and_a_working_token_pair(client: AsyncTestClient[Any]) -> None:
    email = unique_email()

    response = await client.post(
        "/api/auth/register", json={"email": email, "password": "correct horse", "name": "Ada"}
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert {"user", "access_token", "refresh_token", "expires_in"} <= set(body)
    assert body["user"]["email"] == email and body["user"]["name"] == "Ada" and body["user"]["role"] == "user"
    assert uuid.UUID(body["user"]["id"])
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    me = await _me(client, _bearer(body["access_token"]))
    assert me.status_code == 200 and me.json()["id"] == body["user"]["id"]


async def test_registering_an_email_twice_is_a_conflict_whatever_its_case(
    client: AsyncTestClient[Any], make_user: MakeUser
) -> None:
    first = await make_user()

    response = await client.post(
        "/api/auth/register", json={"email": first.email.upper(), "password": "another password", "name": "Dup"}
    )

    assert_error(response, 409, "CONFLICT")


async def test_login_with_the_right_password_returns_a_working_pair(
    client: AsyncTestClient[Any], make_user: MakeUser
) -> None:
    user = await make_user()

    response = await client.post("/api/auth/login", json={"email": user.email, "password": user.password})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["id"] == str(user.id)
    assert body["access_token"] != user.access_token and body["refresh_token"] != user.refresh_token
    assert (await _me(client, _bearer(body["access_token"]))).status_code == 200


async def test_wrong_password_and_unknown_email_get_the_same_401(
    client: AsyncTestClient[Any], make_user: MakeUser
) -> None:
    user = await make_user()

    wrong_password = await client.post("/api/auth/login", json={"email": user.email, "password": "not-the-pw-1"})
    unknown_email = await client.post(
        "/api/auth/login", json={"email": unique_email("nobody"), "password": user.password}
    )

    assert assert_error(wrong_password, 401, "UNAUTHORIZED") == assert_error(unknown_email, 401, "UNAUTHORIZED")


# -- refresh rotation ----------------------------------------------------------------------------------


async def _refresh(client: AsyncTestClient[Any], token: str) -> Any:
    return await client.post("/api/auth/refresh", json={"refresh_token": token})


async def test_refresh_issues_a_new_pair_and_uses_up_the_old_refresh_token(
    client: AsyncTestClient[Any], make_user: MakeUser
) -> None:
    user = await make_user()

    rotated = await _refresh(client, user.refresh_token)

    assert rotated.status_code == 200, rotated.text
    pair = rotated.json()
    assert pair["refresh_token"] != user.refresh_token and pair["access_token"] != user.access_token
    assert (await _me(client, _bearer(pair["access_token"]))).status_code == 200
    assert_error(await _refresh(client, user.refresh_token), 401, "UNAUTHORIZED")


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(
    client: AsyncTestClient[Any], make_user: MakeUser
) -> None:
    user = await make_user()
    newest = (await _refresh(client, user.refresh_token)).json()["refresh_token"]

    assert_error(await _refresh(client, user.refresh_token), 401, "UNAUTHORIZED")  # replayed: a leak

    assert_error(await _refresh(client, newest), 401, "UNAUTHORIZED")


async def test_an_unknown_refresh_token_is_refused(client: AsyncTestClient[Any]) -> None:
    assert_error(await _refresh(client, secrets.token_urlsafe(32)), 401, "UNAUTHORIZED")


# -- logout and revocation -----------------------------------------------------------------------------


async def _logout(client: AsyncTestClient[Any], user: User) -> None:
    response = await client.post("/api/auth/logout", headers=user.headers)
    assert response.status_code == 204, response.text


async def test_logout_answers_204_and_the_access_token_is_refused_afterwards(
    client: AsyncTestClient[Any], make_user: MakeUser
) -> None:
    user = await make_user()
    assert (await _me(client, user.headers)).status_code == 200

    await _logout(client, user)

    assert_error(await _me(client, user.headers), 401, "UNAUTHORIZED")


async def test_logout_with_the_refresh_token_ends_that_session(
    client: AsyncTestClient[Any], make_user: MakeUser
) -> None:
    user = await make_user()

    response = await client.post("/api/auth/logout", json={"refresh_token": user.refresh_token}, headers=user.headers)

    assert response.status_code == 204, response.text
    assert_error(await _refresh(client, user.refresh_token), 401, "UNAUTHORIZED")


async def test_logout_revocation_survives_a_redis_flushall(
    client: AsyncTestClient[Any], make_user: MakeUser, settings: Settings
) -> None:
    user = await make_user()
    await _logout(client, user)

    redis = Redis.from_url(settings.redis.url)
    try:
        await redis.flushall()
        # (the app's WS node recreates its own keys at once; the revocation cache is what must be gone)
        assert await redis.keys("parley:revoked*") == []
    finally:
        await redis.aclose()

    assert_error(await _me(client, user.headers), 401, "UNAUTHORIZED")
    assert_error(await _me(client, user.headers), 401, "UNAUTHORIZED")  # and again, from the reloaded cache


async def test_logging_out_one_session_leaves_the_others_signed_in(
    client: AsyncTestClient[Any], make_user: MakeUser
) -> None:
    user = await make_user()
    other = (await client.post("/api/auth/login", json={"email": user.email, "password": user.password})).json()

    await _logout(client, user)

    assert (await _me(client, _bearer(other["access_token"]))).status_code == 200


# -- tickets and roles ---------------------------------------------------------------------------------


async def test_ws_ticket_returns_a_ticket_and_its_lifetime(client: AsyncTestClient[Any], make_user: MakeUser) -> None:
    user = await make_user()

    response = await client.post("/api/auth/ws-ticket", headers=user.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"ticket", "expires_in"}
    assert isinstance(body["ticket"], str) and len(body["ticket"]) >= 32
    assert 0 < body["expires_in"] <= 60


async def test_ws_ticket_needs_authentication(client: AsyncTestClient[Any]) -> None:
    assert_error(await client.post("/api/auth/ws-ticket"), 401, "UNAUTHORIZED")


async def test_a_user_granted_admin_is_admin_on_me_at_once(
    client: AsyncTestClient[Any], make_user: MakeUser, services: Services
) -> None:
    user = await make_user()
    assert (await _me(client, user.headers)).json()["role"] == "user"

    await services.auth.grant_admin(user.email.upper())

    me = await _me(client, user.headers)
    assert me.status_code == 200 and me.json()["role"] == "admin"


# -- token attacks -------------------------------------------------------------------------------------


def _unsigned(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, None, algorithm="none")


def _hs256_header_none_payload(claims: dict[str, Any]) -> str:
    """A validly signed token whose header claims ``alg: none`` (the signature must not be skipped)."""
    signed = _sign(claims)
    unsigned_header = _unsigned(claims).split(".")[0]
    return ".".join([unsigned_header, *signed.split(".")[1:]])


ATTACKS: dict[str, Any] = {
    "expired": lambda uid: _sign(
        _claims(uid, iat=datetime.now(UTC) - timedelta(hours=1), exp=datetime.now(UTC) - timedelta(minutes=5))
    ),
    "alg_none": lambda uid: _unsigned(_claims(uid)),
    "alg_none_header_on_a_signed_token": lambda uid: _hs256_header_none_payload(_claims(uid)),
    "wrong_secret": lambda uid: _sign(_claims(uid), secret="another-secret-" + "y" * 32),
    "wrong_audience": lambda uid: _sign(_claims(uid, aud="someone-else")),
    "wrong_issuer": lambda uid: _sign(_claims(uid, iss="evil")),
    "missing_jti": lambda uid: _sign(_claims(uid, jti=None)),
    "missing_exp": lambda uid: _sign(_claims(uid, exp=None)),
    "missing_iat": lambda uid: _sign(_claims(uid, iat=None)),
    "missing_sub": lambda uid: _sign(_claims(uid, sub=None)),
    "sub_not_a_uuid": lambda uid: _sign(_claims(uid, sub="admin")),
    "garbage": lambda uid: "not.a.jwt",
}


async def test_a_well_formed_forged_token_is_accepted_so_the_attacks_below_are_meaningful(
    client: AsyncTestClient[Any], make_user: MakeUser
) -> None:
    """The control: the claims the attacks start from, signed with the test secret, do authenticate."""
    user = await make_user()

    response = await _me(client, _bearer(_sign(_claims(user.id))))

    assert response.status_code == 200 and response.json()["id"] == str(user.id)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_a_tampered_token_is_refused_with_401(
    client: AsyncTestClient[Any], make_user: MakeUser, attack: str
) -> None:
    user = await make_user()

    response = await _me(client, _bearer(ATTACKS[attack](user.id)))

    assert_error(response, 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
        {"Authorization": "Token abc"},
    ],
    ids=["missing", "empty", "scheme_only", "blank_token", "basic", "other_scheme"],
)
async def test_a_request_without_a_bearer_token_is_refused_with_401(
    client: AsyncTestClient[Any], headers: dict[str, str]
) -> None:
    assert_error(await _me(client, headers), 401, "UNAUTHORIZED")


async def test_a_basic_scheme_carrying_a_valid_jwt_is_still_refused(
    client: AsyncTestClient[Any], make_user: MakeUser
) -> None:
    user = await make_user()

    assert_error(await _me(client, {"Authorization": f"Basic {user.access_token}"}), 401, "UNAUTHORIZED")


async def test_a_still_valid_token_of_a_deleted_user_is_refused_not_a_500(
    client: AsyncTestClient[Any], make_user: MakeUser, services: Services
) -> None:
    user = await make_user()
    async with services.engine.begin() as conn:
        await conn.execute(sa.delete(users).where(users.c.id == user.id))

    assert_error(await _me(client, user.headers), 401, "UNAUTHORIZED")
    created = await client.post("/api/conversations", json={"title": "orphan"}, headers=user.headers)
    assert_error(created, 401, "UNAUTHORIZED")
