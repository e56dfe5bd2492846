"""Liveness and readiness for load balancers and Kubernetes probes."""

from __future__ import annotations

import asyncio

import msgspec
from litestar import Controller, Response, get

from app.deps import ServicesDep
from infrastructure.db import views
from migrations import head_revision


class Readiness(msgspec.Struct):
    status: str
    checks: dict[str, str]


class HealthController(Controller):
    path = "/health"
    tags = ["operations"]
    include_in_schema = False

    @get("/live", operation_id="Live")
    async def live(self) -> dict[str, str]:
        """The process answers; says nothing about its dependencies."""
        return {"status": "ok"}

    @get("/ready", operation_id="Ready")
    async def ready(self, services: ServicesDep) -> Response[Readiness]:
        """503 until Postgres and Redis answer and the schema is at the head migration."""
        postgres, redis = await asyncio.gather(_postgres(services), _redis(services))
        checks = {"postgres": postgres, "redis": redis}
        ok = all(v == "ok" for v in checks.values())
        return Response(Readiness("ok" if ok else "unavailable", checks), status_code=200 if ok else 503)


async def _postgres(services: ServicesDep) -> str:
    try:
        async with asyncio.timeout(2):
            version = await views.schema_version(services.engine)
    except Exception as exc:  # any failure is "not ready", reported, never raised
        return f"error: {type(exc).__name__}"
    head = head_revision()
    return "ok" if version == head else f"schema at {version}, head is {head}: run `parley migrate`"


async def _redis(services: ServicesDep) -> str:
    try:
        async with asyncio.timeout(2):
            await services.redis.ping()
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"
