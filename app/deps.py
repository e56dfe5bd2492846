"""Dependency providers: the services built at start-up, and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.types import Scope

from domain.errors import Forbidden, Unauthorized
from domain.values import UserRole
from infrastructure.auth.jwt_codec import AccessClaims
from infrastructure.bootstrap import Services


@dataclass(frozen=True)
class CurrentUser:
    id: UUID
    jti: str
    expires_at: datetime

    @property
    def claims(self) -> AccessClaims:
        return AccessClaims(user_id=self.id, jti=self.jti, expires_at=self.expires_at)


#: Handler parameter types: Litestar injects by parameter name (``services``, ``user``).
ServicesDep = NamedDependency[Services]
UserDep = NamedDependency[CurrentUser]


def scope_header(scope: Scope, name: bytes) -> str | None:
    """One request header (``name`` in lower case) read from the ASGI scope, without building a headers
    object: a WebSocket would keep that object for its whole life (2 KiB per idle socket)."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token")
    return token.strip()


async def provide_services(state: State) -> Services:
    services: Services = state.services
    return services


async def provide_current_user(request: Request[object, object, State], services: ServicesDep) -> CurrentUser:
    claims = await services.auth.authenticate(bearer_token(request.headers.get("authorization")))
    return CurrentUser(id=claims.user_id, jti=claims.jti, expires_at=claims.expires_at)


async def is_admin(services: Services, user: CurrentUser) -> bool:
    """Roles are looked up, not trusted from the token: a grant or revoke applies at once."""
    return (await services.auth.get_user(user.id)).role is UserRole.ADMIN


async def require_admin(services: Services, user: CurrentUser) -> None:
    if not await is_admin(services, user):
        raise Forbidden("administrators only")


SERVICES = {"services": Provide(provide_services)}
AUTHENTICATED = {"user": Provide(provide_current_user)}
