"""Per-request plumbing: request id, authentication, logs, metrics and the error body discipline.

Every response, error or not, gets `X-Request-ID`, one `http.request` log line and its metrics. Every
error is API.md's JSON body; an unexpected exception is logged with its traceback and answered with a
generic 500 body that reveals nothing.
"""

from __future__ import annotations

import functools
import re
import uuid

import structlog
import trio
from quart import Quart, Response, current_app, g, has_request_context, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing.exceptions import WebsocketMismatch

from stories.api.authentication import bearer_token
from stories.api.declare import declared_routes
from stories.api.deps import deps
from stories.api.json_io import error_response
from stories.api.probe_deps import probes
from stories.errors import ApiError, Overloaded, RateLimited, Unauthorized

__all__ = ["install_hooks", "public_endpoints", "request_id_for"]

log = structlog.get_logger()


_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_RULE_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
UNMATCHED_ROUTE = "unmatched"

# Werkzeug's HTTP errors, renamed to API.md's stable codes.
_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def request_id_for(sent: str | None) -> str:
    """The request's id (API.md, Conventions): the client's `X-Request-ID` if it sent a sane one (1 to 128
    characters from `A-Z a-z 0-9 . _ : -`), else a fresh one. Also used by the WebSocket upgrade (ws.py)."""
    if sent is not None and _SANE_REQUEST_ID.match(sent):
        return sent
    return uuid.uuid4().hex


@functools.cache
def _template(rule: str) -> str:
    return _RULE_PARAM.sub(r"{\1}", rule)


def route_template() -> str:
    """`/stories/{id}` for a matched route, never a raw id; one label for everything unmatched."""
    rule = request.url_rule
    if rule is None:
        return UNMATCHED_ROUTE
    return _template(rule.rule)


def _bearer_token() -> str:
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise Unauthorized("missing Authorization: Bearer <token> header")
    return token


def public_endpoints(app: Quart) -> frozenset[str]:
    """The endpoints reachable without a token (API.md, Conventions): those declared `public`."""
    return frozenset(endpoint for endpoint, route in declared_routes(app).items() if route.public)


async def _before_request() -> None:
    structlog.contextvars.clear_contextvars()
    g.started = trio.current_time()
    g.request_id = request_id_for(request.headers.get("X-Request-ID"))
    structlog.contextvars.bind_contextvars(request_id=g.request_id)
    if request.url_rule is None or request.method == "OPTIONS" or request.endpoint in _public(current_app):
        return
    # Only the API app has non-public routes (the worker's app serves the probes alone).
    claims = await deps().callers.authenticate(_bearer_token())
    g.user_id, g.session_id = claims
    structlog.contextvars.bind_contextvars(user_id=str(g.user_id))


def _body_left_unread() -> bool:
    """A request body the app answered without reading to the end (a 413, 415, 401, 404 ...)."""
    has_body = bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return has_body and not g.get("body_read", False)


async def _after_request(response: Response) -> Response:
    request_id = g.get("request_id") or uuid.uuid4().hex
    response.headers["X-Request-ID"] = request_id
    if _body_left_unread() and request.http_version.startswith("1."):
        # hypercorn cannot reuse such a connection, but does not say so: a keep-alive client's next request
        # on it would hang. Closing tells the client to open a new one. (HTTP/2 streams are unaffected.)
        response.headers["Connection"] = "close"
    route, method, status = route_template(), request.method, response.status_code
    elapsed = trio.current_time() - g.get("started", trio.current_time())
    probes().metrics.observe_request(route, method, status, elapsed)
    log.info(
        "http.request",
        method=method,
        route=route,
        status=status,
        duration_ms=round(elapsed * 1000, 3),
        request_id=request_id,
    )
    return response


async def _api_error(error: ApiError) -> Response:
    response = error_response(error.status, error.code, error.message, fields=getattr(error, "fields", None))
    if isinstance(error, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="stories"'
    if isinstance(error, RateLimited | Overloaded):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


async def _http_error(error: HTTPException) -> Response:
    if isinstance(error, WebsocketMismatch) and has_request_context():
        # A plain HTTP request to a WebSocket route (GET /ws): say what it takes (RFC 9110, 426).
        response = error_response(426, "upgrade_required", f"{request.path} is a WebSocket: send an upgrade request")
        response.headers["Upgrade"] = "websocket"
        return response
    status = error.code or 500
    code = _HTTP_CODES.get(status, "http_error")
    # Build only the message for this status: the 405 one reads `request`, which a WebSocket upgrade
    # (a 404 on an unknown path, say) does not have.
    if status == 404:
        message = "no such route"
    elif status == 405:
        message = f"{request.method} is not allowed here"
    elif status == 413:
        message = f"the request body is larger than {probes().settings.max_body_bytes} bytes"
    else:
        message = error.description or error.name
    response = error_response(status, code, message)
    if status == 405 and error.get_headers():
        for name, value in error.get_headers():
            if name.lower() == "allow":
                response.headers["Allow"] = value
    return response


async def _unexpected(error: Exception) -> Response:
    log.error("http.unhandled", error=repr(error), exc_info=error)
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


def _public(app: Quart) -> frozenset[str]:
    public: frozenset[str] | None = app.extensions.get("public_endpoints")
    if public is None:
        public = app.extensions["public_endpoints"] = public_endpoints(app)
    return public


def install_hooks(app: Quart) -> None:
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
