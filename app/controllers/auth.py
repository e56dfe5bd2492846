"""Accounts and sessions: /api/auth/* and /api/me."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app.deps import AUTHENTICATED, ServicesDep, UserDep
from app.schemas import (
    AuthRead,
    LoginBody,
    LogoutBody,
    RefreshBody,
    RegisterBody,
    TicketRead,
    TokenPairRead,
    UserRead,
)
from domain.values import User
from infrastructure.auth.service import TokenPair


def _auth_read(user: User, pair: TokenPair) -> AuthRead:
    return AuthRead(
        user=UserRead(id=user.id, email=user.email, name=user.name, role=user.role),
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
    )


class AuthController(Controller):
    path = "/api/auth"
    tags = ["auth"]

    @post("/register", status_code=HTTP_201_CREATED, operation_id="Register", opt={"errors": [409]})
    async def register(self, data: JSONBody[RegisterBody], services: ServicesDep) -> AuthRead:
        return _auth_read(*await services.auth.register(data.email, data.password, data.name))

    @post("/login", status_code=HTTP_200_OK, operation_id="Login", opt={"errors": [401]})
    async def login(self, data: JSONBody[LoginBody], services: ServicesDep) -> AuthRead:
        return _auth_read(*await services.auth.login(data.email, data.password))

    @post("/refresh", status_code=HTTP_200_OK, operation_id="Refresh", opt={"errors": [401]})
    async def refresh(self, data: JSONBody[RefreshBody], services: ServicesDep) -> TokenPairRead:
        pair = await services.auth.refresh(data.refresh_token)
        return TokenPairRead(
            access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
        )

    @post("/logout", status_code=HTTP_204_NO_CONTENT, dependencies=AUTHENTICATED, operation_id="Logout")
    async def logout(self, services: ServicesDep, user: UserDep, data: JSONBody[LogoutBody | None] = None) -> None:
        await services.auth.logout(user.claims, data.refresh_token if data else None)

    @post("/ws-ticket", status_code=HTTP_200_OK, dependencies=AUTHENTICATED, operation_id="IssueWsTicket")
    async def ws_ticket(self, services: ServicesDep, user: UserDep) -> TicketRead:
        ticket, ttl = await services.auth.issue_ws_ticket(user.claims)
        return TicketRead(ticket=ticket, expires_in=ttl)


class MeController(Controller):
    path = "/api/me"
    tags = ["auth"]
    dependencies = AUTHENTICATED

    @get("/", operation_id="GetMe")
    async def me(self, services: ServicesDep, user: UserDep) -> UserRead:
        found = await services.auth.get_user(user.id)
        return UserRead(id=found.id, email=found.email, name=found.name, role=found.role)
