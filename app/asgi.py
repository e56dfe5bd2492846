"""``create_app``: the Litestar application (REST, WebSocket, OpenAPI at /schema, metrics)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from app.access_log import install as install_access_log
from app.controllers.admin import AdminController
from app.controllers.auth import AuthController, MeController
from app.controllers.conversations import ConversationController
from app.controllers.health import HealthController
from app.controllers.replies import ReplyController
from app.controllers.search import SearchController
from app.controllers.unread import UnreadController
from app.deps import SERVICES
from app.errors import handle_exception, quiet_client_faults
from app.openapi import assets_router, complete_document, openapi_config, repair_options_handlers
from app.webapp import Bundle, WebAppController
from app.ws import direct_send, route
from app.ws.node import Node
from infrastructure import gc_tuning
from infrastructure.bootstrap import Services, bootstrap
from infrastructure.metrics import track_pools, untrack_pools
from infrastructure.settings import Settings

log = logging.getLogger("parley.app")


class MetricsController(PrometheusController):
    path = "/metrics"
    include_in_schema = False


def create_server_app() -> Litestar:
    """The app of a ``parley api`` process, which serves it for its whole life: once started, its
    garbage collector is settled (``infrastructure/gc_tuning.py``)."""
    return create_app(settle_gc=True)


def create_app(settings: Settings | None = None, *, settle_gc: bool = False) -> Litestar:
    """Build the app; services are created in the lifespan, never at import."""
    settings = settings or Settings.from_env()
    quiet_client_faults()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services: Services = await bootstrap(settings)
        node = Node(services)
        app.state.services = services
        app.state.node = node
        track_pools(services)
        await node.start()
        if settle_gc:
            gc_tuning.settle()
        try:
            yield
        finally:
            await services.posts.close()  # posts in flight are committed and answered first
            await node.stop()
            untrack_pools(services)
            await services.close()

    # HTTP only: on WebSockets the middleware would wrap every frame sent, for a metric of no use.
    prometheus = PrometheusConfig(
        app_name="parley",
        prefix="parley",
        group_path=True,
        exclude=["/metrics", "/health"],
        scopes={ScopeType.HTTP},
    )
    app = Litestar(
        route_handlers=[
            AuthController,
            MeController,
            ConversationController,
            ReplyController,
            UnreadController,
            SearchController,
            HealthController,
            AdminController,
            MetricsController,
            assets_router(),
            WebAppController,
        ],
        state=State({"webapp": Bundle.load()}),
        dependencies=SERVICES,
        lifespan=[lifespan],
        exception_handlers={Exception: handle_exception},
        middleware=[prometheus.middleware],
        request_max_body_size=settings.limits.max_body_bytes,
        cors_config=CORSConfig(allow_origins=list(origins)) if (origins := settings.server.allowed_origins) else None,
        openapi_config=openapi_config(settings.limits),
        on_startup=[lambda app: complete_document(app, settings.limits)],
        debug=False,
        # Logging is configured once per process (infrastructure/logs.py), not by Litestar.
        logging_config=None,
    )
    repair_options_handlers(app)
    # ``GET /ws`` is routed before Litestar's router (app/ws/route.py); the access log wraps everything
    # the app does; outside it, the server's own send is kept for the sockets' data frames
    # (app/ws/direct_send.py).
    return direct_send.install(install_access_log(route.install(app)))
