"""docs/websocket.md is generated from app/ws/frames.py: the committed page must match the types."""

from __future__ import annotations

from pathlib import Path

from app import wsdoc
from app.ws import frames

PAGE = Path(__file__).resolve().parents[2] / "docs" / "websocket.md"


def test_committed_websocket_page_matches_the_frame_types() -> None:
    assert PAGE.read_text() == wsdoc.render(), "run `make docs` and commit docs/websocket.md"


def test_every_client_frame_is_documented_with_its_fields() -> None:
    page = wsdoc.render()
    for cls in wsdoc._client_frames():
        assert f"### `{cls.__struct_config__.tag}`" in page
        for field in cls.__struct_fields__:
            assert f"| `{field}` |" in page
    assert frames.Join in wsdoc._client_frames()
