"""``GET /ws`` is routed in front of Litestar's router (``app/ws/route.py``): the gateway answers on
``/ws`` and ``/ws/``, other WebSocket paths are still Litestar's, and a handler that fails is logged
with its traceback and closed with 1011 instead of vanishing."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.ws import gateway
from app.ws.route import CLOSE_INTERNAL_ERROR
from infrastructure.settings import Settings
from tests.integration.conftest import serving


async def _close_code(url: str) -> int | None:
    async with websockets.connect(url) as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        return ws.close_code


@pytest.mark.parametrize("path", ["/ws", "/ws/"])
async def test_the_gateway_answers_its_path(settings: Settings, clean_state: None, path: str) -> None:
    async with serving(settings) as url:
        # No credentials: the gateway's own refusal, not a router's.
        assert await _close_code(url.removesuffix("/ws") + path) == gateway.CLOSE_UNAUTHORIZED


async def test_other_socket_paths_are_not_the_gateway(settings: Settings, clean_state: None) -> None:
    async with serving(settings) as url:
        other = url.removesuffix("/ws") + "/wsx"
        try:
            code = await _close_code(other)
        except InvalidStatus as exc:  # refused at the handshake: also not the gateway
            assert exc.response.status_code != 101
        else:
            assert code != gateway.CLOSE_UNAUTHORIZED


async def test_a_failing_handler_is_logged_and_its_socket_closed_with_1011(
    settings: Settings, clean_state: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug in the gateway")

    monkeypatch.setattr(gateway, "authenticate", broken)
    with caplog.at_level(logging.ERROR, logger="parley.ws.gateway"):
        async with serving(settings) as url:
            assert await _close_code(url) == CLOSE_INTERNAL_ERROR
    (record,) = [r for r in caplog.records if r.name == "parley.ws.gateway"]
    assert record.exc_info is not None and "a bug in the gateway" in str(record.exc_info[1])
