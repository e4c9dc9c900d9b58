"""GET /openapi.json (OpenAPI 3.1 of every route this build serves), GET /docs (Swagger UI) and its files.

The browser is Swagger UI as the pinned `flask-swagger-ui` package ships it (only its static files are used,
not its Flask blueprint): served from this process under /docs/static/, so /docs works without the internet.
tests/api/test_docs.py keeps the document equal to the app's routes and valid OpenAPI; .ci/run fuzzes a real
server against it with Schemathesis (CONTRIBUTING.md says how to run that locally).
"""

from __future__ import annotations

import functools
import hashlib
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from quart import Response, current_app, request

from stories import __version__
from stories.api import ws
from stories.api.declare import DeclaredBlueprint, Route, declared_routes
from stories.api.deps import deps
from stories.api.json_io import JSON_CONTENT_TYPE
from stories.api.openapi import error_responses, json_answer
from stories.api.schemas import component_schemas
from stories.errors import NotFound

if TYPE_CHECKING:
    from collections.abc import Iterable

    from stories.settings import Settings

__all__ = ["SWAGGER_UI_FILES", "blueprint", "openapi_document"]

blueprint = DeclaredBlueprint("docs", __name__)
# Routes served outside Quart's views.
VIEWLESS_ROUTES = (ws.ROUTE,)

# The files of the Swagger UI distribution that /docs loads, with the type each is served as. Nothing else of the
# package is served: the path parameter of /docs/static/{file} is this list.
SWAGGER_UI_FILES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
# Browsers may keep the files for a day: they change only with the pinned package.
SWAGGER_UI_CACHE_SECONDS = 86_400


def _swagger_ui_dist() -> Path:
    return Path(str(files("flask_swagger_ui") / "dist"))


def openapi_document(settings: Settings, routes: Iterable[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route `create_app` serves (`routes`, its declarations), with this
    process's limits."""
    paths: dict[str, Any] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = route.operation(settings)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Stories",
            "version": __version__,
            "summary": "Ephemeral stories: HTTP and WebSocket API",
            "description": "JSON in, JSON out. Routes with a lock need `Authorization: Bearer <jwt>`: sign up or "
            'log in, then paste the token into Authorize. Every error has the body `{"error": "<code>", '
            '"message": "..."}` (validation errors add `fields`), and every response carries `X-Request-ID` '
            "(yours, when you send a sane one). Times are RFC 3339 UTC with milliseconds; ids are UUIDs. "
            "The contract in prose is docs/API.md.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {
                "name": "auth",
                "description": "sign up, log in and sessions: a bearer JWT per session, refresh tokens that rotate",
            },
            {"name": "profiles", "description": "display names and profiles"},
            {"name": "account", "description": "your account and your data: delete it, export it"},
            {"name": "stories", "description": "stories, the feed, views, reactions and who saw them"},
            {"name": "social", "description": "follows, blocks and mutes"},
            {"name": "stats", "description": "your figures"},
            {"name": "media", "description": "uploads, straight to the object store"},
            {"name": "realtime", "description": "the WebSocket"},
            {"name": "reports", "description": "report a story or a user"},
            {
                "name": "moderation",
                "description": "the reports queue, decisions, suspensions and the audit log: moderators only "
                "(`stories admin grant <email>`); everyone else gets 404",
            },
            {"name": "operations", "description": "probes, metrics and this document"},
        ],
        "paths": paths,
        "components": {
            "schemas": component_schemas(),
            "responses": error_responses(settings),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "the token of POST /signup or POST /login",
                }
            },
        },
        "security": [{"bearer": []}],
    }


# ---------------------------------------------------------------------------------------------------------------
# Routes

# Swagger UI's own page, pointed at this process's files and document. No asset comes from elsewhere:
# validatorUrl null keeps it from sending the document to the public validator.
_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Stories API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="/docs/static/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js" charset="utf-8"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  displayRequestDuration: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
});
</script>
</body>
</html>
"""


OPENAPI = Route(
    "GET",
    "/openapi.json",
    "openapi",
    "operations",
    "This document (OpenAPI 3.1)",
    {"200": json_answer({"type": "object", "required": ["openapi", "paths"]}, "the document")},
    public=True,
    table_answer="`200` OpenAPI 3.1 document",
)


@blueprint.declare(OPENAPI)
async def openapi() -> Response:
    # Built once per process: the routes and the settings do not change while it runs.
    body = current_app.extensions.get("openapi")
    if body is None:
        routes = [*declared_routes(current_app).values(), *VIEWLESS_ROUTES]
        body = current_app.extensions["openapi"] = orjson.dumps(openapi_document(deps().settings, routes))
    return Response(body, 200, content_type=JSON_CONTENT_TYPE)


DOCS = Route(
    "GET",
    "/docs",
    "docs",
    "operations",
    "Browse this document (Swagger UI, served by this process: works offline)",
    {"200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}}},
    public=True,
    table_answer="`200` HTML API browser",
)


@blueprint.declare(DOCS)
async def docs() -> Response:
    return Response(_DOCS_PAGE, 200, content_type="text/html; charset=utf-8")


@functools.cache
def _swagger_ui_file(name: str) -> tuple[bytes, str]:
    """The file's bytes and their ETag, read once per process: 2 MB in all, which never change while it runs.
    (Served from memory: Quart's file bodies cost two thread hops per 8 KiB chunk.)"""
    data = (_swagger_ui_dist() / name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:32]


DOCS_FILE = Route(
    "GET",
    "/docs/static/{file}",
    "docsFile",
    "operations",
    "A file of the Swagger UI that /docs loads",
    {
        "200": {
            "description": "the file",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in sorted(set(SWAGGER_UI_FILES.values()))
            },
        },
        "304": {"description": "not modified (If-None-Match)"},
    },
    public=True,
    parameters=[{"name": "file", "in": "path", "required": True, "schema": {"enum": list(SWAGGER_UI_FILES)}}],
    table_answer="`200` a file of the API browser",
)


@blueprint.declare(DOCS_FILE)
async def docs_file(file: str) -> Response:
    content_type = SWAGGER_UI_FILES.get(file)
    if content_type is None:
        raise NotFound("no such file of the API browser")
    data, etag = _swagger_ui_file(file)
    unchanged = request.if_none_match.contains(etag)
    response = Response(b"" if unchanged else data, 304 if unchanged else 200, content_type=content_type)
    response.set_etag(etag)
    response.cache_control.public = True
    response.cache_control.max_age = SWAGGER_UI_CACHE_SECONDS
    return response
