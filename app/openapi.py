"""The OpenAPI document (``/schema/openapi.json``, Swagger UI at ``/schema/swagger``, ReDoc at
``/schema/redoc``) made to tell the truth about errors, auth and limits, for every route, centrally.

Litestar documents the success response of each operation. ``complete_document`` (run once at start-up)
adds, to every operation, the error responses it can really return, each with the one error envelope
``{"error": {"code", "message", "details"}}`` of ``app/errors.py``, derived from what the route is:

- every operation: 503 ``UNAVAILABLE`` (PostgreSQL or Redis down; safe to retry);
- it takes parameters or a body: 400 ``VALIDATION``; a body: 413 ``TOO_LARGE`` as well;
- it needs the ``user`` dependency (``app.deps.AUTHENTICATED``): 401, and the bearer security scheme;
- it has path parameters: 404, and 403 when it also needs a user (the resource may not be theirs);
- whatever the handler's body raises beyond that: ``opt={"errors": [409, 429, ...]}`` on the route;
  429 carries ``Retry-After``.

New controllers are covered without edits here. Schema names are made readable (``Page_domain.values.
Message_`` -> ``MessagePage``). The UIs' JavaScript and CSS are served from ``app/docs_assets`` (vendored
from npm with their licenses), never from a CDN.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin  # the plugin that caches the served document
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from app.errors import CODE_BY_STATUS, STATUS_BY_CODE
from domain.limits import Limits
from infrastructure.auth.service import MAX_PASSWORD, MIN_PASSWORD

ASSETS_DIR = Path(__file__).parent / "docs_assets"
ASSETS_PATH = "/schema/assets"
BEARER = "bearer"

DESCRIPTIONS = {
    400: "The request is malformed or breaks a rule (unknown field, wrong type, bad value).",
    401: "No valid access token: missing, expired, logged out, wrongly signed, wrong audience or issuer.",
    403: "Authenticated, but not allowed: not a participant of the conversation, not the owner, not an admin.",
    404: "No such resource (or no such route).",
    409: "The request conflicts with the current state (e.g. the email is already registered).",
    413: "Too large: the request body, or a text over its limit.",
    429: "Too many messages: wait ``Retry-After`` seconds.",
    503: "PostgreSQL or Redis is unavailable; nothing was changed, retry later.",
}


def openapi_config(limits: Limits) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Parley",
        version="1",
        description=(
            "Real-time chat with an AI assistant in the room. Every error has the body "
            '`{"error": {"code", "message", "details"}}`. Authenticate with `Authorization: Bearer <access_token>` '
            "(from /api/auth/register or /api/auth/login). The WebSocket protocol (`GET /ws`) is described in "
            "docs/websocket.md, generated from the frame types. Limits: request bodies up to "
            f"{limits.max_body_bytes // 1024} KiB (413 beyond), message text {limits.max_text_chars} characters, "
            f"{limits.messages_per_second:g} messages/s per user with bursts of {limits.message_burst} "
            "(429 with Retry-After)."
        ),
        path="/schema",
        components=Components(
            security_schemes={
                BEARER: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="JWT",
                    description="The access_token of /api/auth/login, /register or /refresh.",
                )
            }
        ),
        create_examples=False,
        render_plugins=[
            SwaggerRenderPlugin(
                js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                css_url=f"{ASSETS_PATH}/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
                favicon=f'<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">',
            ),
            RedocRenderPlugin(
                js_url=f"{ASSETS_PATH}/redoc.standalone.js",
                google_fonts=False,
                favicon=f'<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">',
            ),
        ],
    )


def assets_router() -> ControllerRouterHandler:
    return create_static_files_router(
        path=ASSETS_PATH, directories=[ASSETS_DIR], include_in_schema=False, name="docs-assets"
    )


def error_schemas() -> dict[str, Any]:
    codes = sorted({*STATUS_BY_CODE, *CODE_BY_STATUS.values()})
    return {
        "Error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": codes, "description": "Stable, machine-readable."},
                "message": {"type": "string", "description": "For people; may change."},
                "details": {"description": "Per code: e.g. the failing fields of a VALIDATION error."},
                "ref": {"type": "string", "description": "Only on INTERNAL errors: quote it when reporting."},
            },
        },
        "ErrorEnvelope": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"$ref": "#/components/schemas/Error"}},
        },
    }


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": DESCRIPTIONS.get(status, "Error."),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    }
    if status == 429:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before sending again.",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response


def error_statuses(handler: HTTPRouteHandler, operation: dict[str, Any]) -> set[int]:
    """The error statuses an operation can return, from what the route is (see the module docstring)."""
    statuses = {503}
    params = operation.get("parameters", [])
    authenticated = "user" in handler.resolve_dependencies()
    if params or "requestBody" in operation:
        statuses.add(400)
    if "requestBody" in operation:
        statuses.add(413)
    if authenticated:
        statuses.add(401)
    if any(p.get("in") == "path" for p in params):
        statuses |= {404, 403} if authenticated else {404}
    statuses |= set(handler.opt.get("errors", ()))
    return statuses


_GENERIC = re.compile(r"^(?P<outer>\w+?)_(?:[\w]+\.)*(?P<inner>\w+)_$")


def _readable(name: str) -> str:
    """``Page_domain.values.Message_`` -> ``MessagePage``."""
    match = _GENERIC.match(name)
    return f"{match['inner']}{match['outer']}" if match else name


def _rename_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                "#/components/schemas/" + renames.get(v.rsplit("/", 1)[-1], v.rsplit("/", 1)[-1])
                if k == "$ref" and isinstance(v, str) and v.startswith("#/components/schemas/")
                else _rename_refs(v, renames)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rename_refs(v, renames) for v in node]
    return node


#: Text the domain trims and then requires non-empty and free of NUL (PostgreSQL text cannot hold it).
_NOT_BLANK = r"^[^\x00]*[^\x00\s][^\x00]*$"


def _domain_rules(limits: Limits) -> dict[tuple[str, str], dict[str, Any]]:
    """Rules the domain enforces after decoding (trimmed lengths, e-mail shape), stated in the schema so
    that every request the document allows is one the server accepts."""
    trimmed = "after trimming surrounding white space"
    return {
        ("MessageCreate", "text"): {
            "maxLength": limits.max_text_chars,
            "pattern": _NOT_BLANK,
            "description": f"1 to {limits.max_text_chars} characters {trimmed} (413 beyond).",
        },
        **{
            (schema, "title"): {
                "maxLength": limits.max_title_chars,
                "pattern": _NOT_BLANK,
                "description": f"1 to {limits.max_title_chars} characters {trimmed} (413 beyond).",
            }
            for schema in ("ConversationCreate", "ConversationUpdate")
        },
        ("ConversationCreate", "participant_ids"): {"maxItems": limits.max_participants_per_request},
        ("ParticipantsAdd", "user_ids"): {"maxItems": limits.max_participants_per_request},
        ("RegisterBody", "email"): {
            "maxLength": 254,
            "pattern": r"^\s*[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}\s*$",
            "description": "An e-mail address; compared case-insensitively.",
        },
        ("RegisterBody", "password"): {"minLength": MIN_PASSWORD, "maxLength": MAX_PASSWORD},
        ("RegisterBody", "name"): {
            "maxLength": 100,
            "pattern": _NOT_BLANK,
            "description": f"1 to 100 characters {trimmed}.",
        },
    }


def _either_user_id_or_user_ids(schemas: dict[str, Any], limits: Limits) -> None:
    """``ParticipantsAdd``: ``user_id`` or a non-empty ``user_ids``, at most the limit in all (said in
    words: an ``anyOf`` of the two shapes trips schema-driven test generators)."""
    schema = schemas.get("ParticipantsAdd")
    if schema is not None:
        most = limits.max_participants_per_request
        schema["description"] = f"Give user_id, or user_ids, or both: 1 to {most} users in all (400 otherwise)."


def _apply_rules(schemas: dict[str, Any], limits: Limits) -> None:
    for (schema, field), rules in _domain_rules(limits).items():
        prop = schemas.get(schema, {}).get("properties", {}).get(field)
        if prop is None:
            continue
        # A nullable field is {"oneOf": [{"type": "string", ...}, {"type": "null"}]}: constrain the string.
        target = next((alt for alt in prop.get("oneOf", []) if alt.get("type") not in (None, "null")), prop)
        if "type" in target and target["type"] not in ("string", "array"):
            continue
        target.update({k: v for k, v in rules.items() if k != "description"})
        if "description" in rules:
            prop["description"] = rules["description"]


def _struct_classes() -> dict[str, type[msgspec.Struct]]:
    found: dict[str, type[msgspec.Struct]] = {}
    pending: list[type[msgspec.Struct]] = [msgspec.Struct]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.__name__, cls)
        pending.extend(cls.__subclasses__())
    return found


def _forbid_unknown_fields(schemas: dict[str, Any]) -> None:
    """Request bodies refuse unknown fields (a typo is an error): say so with additionalProperties."""
    classes = _struct_classes()
    for name, schema in schemas.items():
        cls = classes.get(name)
        if cls is not None and cls.__struct_config__.forbid_unknown_fields and schema.get("type") == "object":
            schema["additionalProperties"] = False


def build_document(app: Litestar, limits: Limits) -> dict[str, Any]:
    plugin = app.plugins.get(OpenAPIPlugin)
    doc = copy.deepcopy(plugin.provide_openapi().to_schema())
    components = doc.setdefault("components", {})
    renames = {name: _readable(name) for name in components.get("schemas", {})}
    doc = dict(_rename_refs(doc, renames))
    schemas = {renames.get(k, k): v for k, v in doc["components"].get("schemas", {}).items()}
    schemas.update(error_schemas())
    _apply_rules(schemas, limits)
    _either_user_id_or_user_ids(schemas, limits)
    _forbid_unknown_fields(schemas)
    doc["components"]["schemas"] = dict(sorted(schemas.items()))
    _integral_bounds(doc)
    for route in plugin.included_routes.values():
        path_item = doc["paths"].get(route.path_format or "/", {})
        for method, (handler, _) in route.route_handler_map.items():
            operation = path_item.get(method.lower())
            if operation is None or not isinstance(handler, HTTPRouteHandler):
                continue
            _constrain_parameters(handler, operation)
            if "requestBody" in operation and _body_optional(handler):
                operation["requestBody"]["required"] = False
            responses = operation.setdefault("responses", {})
            for status in sorted(error_statuses(handler, operation)):
                responses[str(status)] = _error_response(status)
            if "user" in handler.resolve_dependencies():
                operation["security"] = [{BEARER: []}]
    return doc


_NUMERIC = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}
_TEXTUAL = {"min_length": "minLength", "max_length": "maxLength", "pattern": "pattern"}


def _value_branch(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null alternative of an optional value's ``oneOf``, else the schema itself."""
    return next((alt for alt in schema.get("oneOf", []) if alt.get("type") not in (None, "null")), schema)


def _constrain_parameters(handler: HTTPRouteHandler, operation: dict[str, Any]) -> None:
    """Litestar drops ``ge=0`` (falsy) and puts bounds beside ``oneOf`` for optional parameters, where
    they constrain nothing: restate each parameter's bounds on its value's schema."""
    fields = handler.parsed_fn_signature.parameters
    for param in operation.get("parameters", []):
        definition = getattr(fields.get(param["name"]), "kwarg_definition", None)
        if definition is None:
            continue
        schema = param.setdefault("schema", {})
        target = _value_branch(schema)
        for attr, keyword in (_NUMERIC | _TEXTUAL).items():
            value = getattr(definition, attr, None)
            if value is None:
                continue
            schema.pop(keyword, None)
            target[keyword] = int(value) if attr in _NUMERIC and target.get("type") == "integer" else value


def _integral_bounds(node: Any) -> None:
    """Bounds of integer schemas as integers: 2**62 written as a float is rounded, and a client may
    then send a value the server refuses."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                if isinstance(node.get(keyword), float):
                    node[keyword] = int(node[keyword])
        for value in node.values():
            _integral_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _integral_bounds(value)


def _body_optional(handler: HTTPRouteHandler) -> bool:
    data = handler.parsed_fn_signature.parameters.get("data")
    return data is not None and data.has_default


def repair_options_handlers(app: Litestar) -> None:
    """Litestar 2.25 answers ``OPTIONS`` with the ``Allow`` of the first handler registered on a path
    when one controller puts several methods on it (its handler closes over a superseded route):
    point each route's OPTIONS handler at the route itself, so ``Allow`` lists every method."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        fn = route.route_handler_map["OPTIONS"][0].fn
        for cell in fn.__closure__ or ():
            if isinstance(cell.cell_contents, HTTPRoute):
                cell.cell_contents = route


def complete_document(app: Litestar, limits: Limits) -> None:
    """Replace the served document by the completed one (Litestar serves what the plugin caches)."""
    plugin = app.plugins.get(OpenAPIPlugin)
    plugin._openapi_schema = build_document(app, limits)
