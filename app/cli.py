"""The ``parley`` command: every role of the system, one sub-command each (see ``parley --help``)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import sys
import textwrap
from collections.abc import Sequence

from app import dev_env
from infrastructure import logs
from infrastructure.settings import LogSettings, Settings, SettingsError, describe_settings

log = logging.getLogger("parley.cli")


def _version() -> str:
    try:
        return importlib.metadata.version("parley")
    except importlib.metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


def _settings(*, signing: bool = False) -> Settings:
    """Settings from the environment; without DATABASE_URL / REDIS_URL, those of a `parley dev`
    running from this directory (``app/dev_env.py``). Only roles that issue or check tokens
    (``signing=True``: the API) need JWT_SECRET."""
    used = dev_env.load_running(os.environ)
    if used is not None:
        log.info("using the running `parley dev` (%s)", used)
    try:
        return Settings.from_env(signing=signing)
    except SettingsError as exc:
        sys.exit(f"parley: configuration error: {exc}")


def cmd_migrate(args: argparse.Namespace) -> int:
    from infrastructure.migrate import upgrade_head

    settings = _settings()
    upgrade_head(settings.database.url)
    print("database is at the head revision")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from app.ws import server_protocol

    settings = _settings(signing=True)  # fail fast, before uvicorn imports the app
    uvicorn.run(
        "app.asgi:create_server_app",
        factory=True,
        host=args.host,
        port=args.port,
        proxy_headers=True,
        ws=server_protocol.IMPORT_STRING if args.ws_protocol == "lean" else "websockets-sansio",
        # Protocol-level pings: an idle socket that does not answer within the timeout is dropped.
        ws_ping_interval=20,
        ws_ping_timeout=20,
        ws_max_size=settings.limits.max_frame_bytes,
        # Off by default: a socket with permessage-deflate holds zlib state on the node for its whole
        # life (docs/operations.md, "WebSocket connections").
        ws_per_message_deflate=settings.server.ws_deflate,
        # Logging is ours (infrastructure/logs.py, configured in main): uvicorn keeps no handlers of
        # its own, and the access log is app/access_log.py's (request ids, redacted query strings).
        log_config=None,
        log_level=settings.log.level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from workers.outbox_relay import main as relay_main

    asyncio.run(relay_main(_settings()))
    return 0


def cmd_projector(args: argparse.Namespace) -> int:
    from workers.projector import main as projector_main

    asyncio.run(projector_main(_settings()))
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from infrastructure.bootstrap import bootstrap
    from workers.projector_rebuild import progress_printer, rebuild

    async def run() -> int:
        services = await bootstrap(_settings())
        try:
            return await rebuild(services, progress_printer())
        finally:
            await services.close()

    count = asyncio.run(run())
    print(f"read models rebuilt for {count} conversations")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.worker import main as worker_main

    # uvloop (installed with uvicorn[standard]) where it exists: the worker relays every delta of every
    # answer, and the loop's own overhead is a large part of its cost per delta.
    try:
        import uvloop
    except ImportError:
        asyncio.run(worker_main(_settings()))
    else:
        uvloop.run(worker_main(_settings()))
    return 0


def cmd_embeddings_backfill(args: argparse.Namespace) -> int:
    from workers.backfill import main as backfill_main

    return asyncio.run(backfill_main(_settings(), batch_size=args.batch_size, progress=args.progress))


def cmd_streams(args: argparse.Namespace) -> int:
    import msgspec

    from infrastructure.bootstrap import bootstrap
    from infrastructure.streams_report import build_report, render

    async def report() -> str:
        services = await bootstrap(_settings())
        try:
            result = await build_report(services)
        finally:
            await services.close()
        return msgspec.json.encode(result).decode() if args.json else render(result)

    print(asyncio.run(report()))
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from app.dev import run_dev

    return run_dev(host=args.host, port=args.port)


def cmd_grant_admin(args: argparse.Namespace) -> int:
    from infrastructure.bootstrap import bootstrap

    async def grant() -> None:
        services = await bootstrap(_settings())
        try:
            user = await services.auth.grant_admin(args.email)
            print(f"{user.email} is now an administrator")
        finally:
            await services.close()

    asyncio.run(grant())
    return 0


def build_parser() -> argparse.ArgumentParser:
    settings_help = "\n".join(f"  {env:<26} {textwrap.shorten(text, 90)}" for env, text in describe_settings())
    parser = argparse.ArgumentParser(
        prog="parley",
        description="Parley: real-time chat with an AI assistant in the room.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="settings (environment variables):\n" + settings_help,
    )
    parser.add_argument("--version", action="version", version=f"parley {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="run everything on this machine (embedded PostgreSQL and Redis if unset)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.set_defaults(run=cmd_dev)

    sub.add_parser("migrate", help="upgrade the database schema to the head revision").set_defaults(run=cmd_migrate)

    api = sub.add_parser("api", help="serve REST and WebSocket (one node)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument(
        "--ws-protocol",
        choices=("lean", "uvicorn"),
        default="lean",
        help="WebSocket protocol object per socket: uvicorn's, trimmed for idle sockets (app/ws/server_protocol.py), "
        "or uvicorn's own (websockets-sansio)",
    )
    api.set_defaults(run=cmd_api)

    sub.add_parser("relay", help="publish committed outbox rows to Redis Streams (flow 2)").set_defaults(run=cmd_relay)
    streams = sub.add_parser("streams", help="print stream lengths, consumer-group lag and the outbox backlog")
    streams.add_argument("--json", action="store_true", help="machine-readable output")
    streams.set_defaults(run=cmd_streams)

    sub.add_parser("projector", help="keep the read models (conversation lists, unread, stats; flow 4)").set_defaults(
        run=cmd_projector
    )
    sub.add_parser(
        "worker", help="consume events as group `assistant`, run arq jobs: embeddings and assistant replies (flow 5)"
    ).set_defaults(run=cmd_worker)
    embeddings = sub.add_parser("embeddings", help="message embeddings")
    embeddings_sub = embeddings.add_subparsers(dest="embeddings_command", required=True)
    backfill = embeddings_sub.add_parser(
        "backfill", help="embed every message that has no vector yet (safe to rerun, or beside the worker)"
    )
    backfill.add_argument("--batch-size", type=int, default=64, help="messages per model call")
    backfill.add_argument(
        "--progress", choices=["auto", "bar", "log"], default="auto", help="progress bar (TTY) or log lines"
    )
    backfill.set_defaults(run=cmd_embeddings_backfill)
    projections = sub.add_parser("projections", help="recompute every read model from the write tables")
    projections.add_argument("action", choices=["rebuild"])
    projections.set_defaults(run=cmd_rebuild)

    users = sub.add_parser("users", help="manage users")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    grant = users_sub.add_parser("grant-admin", help="make a registered user an administrator")
    grant.add_argument("email")
    grant.set_defaults(run=cmd_grant_admin)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        log_settings = LogSettings.from_env()
    except SettingsError as exc:
        sys.exit(f"parley: configuration error: {exc}")
    logs.configure(log_settings.level, log_settings.format)
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
