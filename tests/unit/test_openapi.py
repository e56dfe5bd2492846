"""The OpenAPI document as built for the app (no server needed): every operation states the errors it
can return with the one envelope, secured operations say so, and the docs UIs load nothing from a CDN.
tests/e2e/test_contract.py checks the same document against a running API with schemathesis."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from app.asgi import create_app
from app.openapi import build_document
from domain.limits import Limits
from infrastructure.settings import Settings

ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document(create_app(Settings()), Limits())


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), path, op) for path, item in document["paths"].items() for m, op in item.items()]


def test_every_operation_documents_its_errors_with_the_envelope(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert len(operations) >= 19
    for method, path, op in operations:
        responses = op["responses"]
        errors = {int(s): r for s, r in responses.items() if int(s) >= 400}
        assert 503 in errors, (method, path)
        assert all(r["content"]["application/json"]["schema"] == ENVELOPE for r in errors.values()), (method, path)
        if op.get("security"):
            assert 401 in errors, (method, path)
        if "{" in path:
            assert 404 in errors, (method, path)
        if "requestBody" in op:
            assert {400, 413} <= set(errors), (method, path)


def test_secured_operations_use_the_bearer_scheme(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    secured = {op["operationId"] for _, _, op in _operations(document) if op.get("security") == [{"bearer": []}]}
    assert {"ListConversations", "PostMessage", "GetMe", "IssueWsTicket", "GetStreamReport"} <= secured
    assert not {"Register", "Login", "Refresh"} & secured


def test_specific_errors_are_documented_where_they_happen(document: dict[str, Any]) -> None:
    by_id = {op["operationId"]: op["responses"] for _, _, op in _operations(document)}
    assert "Retry-After" in by_id["PostMessage"]["429"]["headers"]
    assert "200" in by_id["PostMessage"] and "201" in by_id["PostMessage"]
    assert "409" in by_id["Register"] and "401" in by_id["Login"] and "403" in by_id["GetStreamReport"]
    assert "403" in by_id["GetConversation"]


def test_schemas_have_readable_names_and_real_limits(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert [name for name in schemas if not re.fullmatch(r"[A-Z][A-Za-z0-9]+", name)] == []
    assert {"MessagePage", "ConversationSummaryPage", "ErrorEnvelope", "Error"} <= set(schemas)
    limits = Limits()
    assert schemas["MessageCreate"]["properties"]["text"]["maxLength"] == limits.max_text_chars
    assert schemas["MessageCreate"]["additionalProperties"] is False


async def test_docs_pages_load_their_assets_from_the_package() -> None:
    app = create_app(Settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for page in ("/schema/swagger", "/schema/redoc"):
            html = (await client.get(page)).text
            urls = re.findall(r"""(?:src|href)=["']([^"']+)""", html)
            assert urls and [u for u in urls if not u.startswith("/schema/assets/")] == [], page
            for url in urls:
                assert (await client.get(url)).status_code == 200, url
