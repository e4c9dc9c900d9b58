"""Error discipline (API.md, Conventions): bad input is a documented 4xx JSON body, never a 500;
X-Request-ID, CORS, /metrics and the per-request log line."""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

import orjson
import pytest
from quart import Response

from tests.helpers import PASSWORD, signup

JSON = {"Content-Type": "application/json"}
LIMIT = 65_536
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def app(app):  # extends the shared fixture with a route that fails unexpectedly
    async def boom() -> Response:
        raise RuntimeError("a bug, not bad input")

    app.add_url_rule("/_test/boom", "test.boom", boom, methods=["GET"])
    return app


async def assert_error(response: Any, status: int, code: str, case: object = "") -> dict[str, Any]:
    assert response.status_code == status, (case, await response.get_data())
    assert response.headers["Content-Type"] == "application/json; charset=utf-8", case
    body = await response.get_json()
    assert body["error"] == code, case
    assert isinstance(body["message"], str), case
    assert body["message"], case
    assert set(body) <= {"error", "message", "fields"}, case
    assert response.headers["X-Request-ID"], case
    return dict(body)


BAD_BODIES: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("malformed json", b'{"email": "a@example.com", "password":', JSON, 400, "invalid_request"),
    ("trailing garbage", b'{"email": "a@example.com"} x', JSON, 400, "invalid_request"),
    ("array", b'["a@example.com", "password"]', JSON, 400, "invalid_request"),
    ("string", b'"a@example.com"', JSON, 400, "invalid_request"),
    ("number", b"42", JSON, 400, "invalid_request"),
    ("null", b"null", JSON, 400, "invalid_request"),
    ("empty body", b"", JSON, 400, "invalid_request"),
    ("white space only", b"  \n ", JSON, 400, "invalid_request"),
    ("invalid utf-8", b'{"email": "\xff\xfe@example.com", "password": "12345678"}', JSON, 400, "invalid_request"),
    ("utf-8 bom", b'\xef\xbb\xbf{"email": "a@example.com"}', JSON, 400, "invalid_request"),
    ("lone surrogate", b'{"email": "\\ud800@example.com", "password": "12345678"}', JSON, 400, "invalid_request"),
    ("raw NUL byte", b'{"email": "a\x00@example.com", "password": "12345678"}', JSON, 400, "invalid_request"),
    ("escaped NUL", b'{"email": "a\\u0000@example.com", "password": "12345678"}', JSON, 400, "invalid_request"),
    ("NUL in password", b'{"email": "a@example.com", "password": "1234\\u00005678"}', JSON, 400, "invalid_request"),
    ("deep nesting", b"[" * 5000 + b"]" * 5000, JSON, 400, "invalid_request"),
    ("infinite number", b'{"email": 1e999, "password": "12345678"}', JSON, 400, "invalid_request"),
    ("object email", b'{"email": {"$ne": null}, "password": "12345678"}', JSON, 400, "invalid_request"),
    ("boolean password", b'{"email": "a@example.com", "password": true}', JSON, 400, "invalid_request"),
    ("text/plain", b'{"email": "a@example.com", "password": "12345678"}', {"Content-Type": "text/plain"}, 415,
     "unsupported_media_type"),
    ("form", b"email=a%40example.com&password=12345678", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
     "unsupported_media_type"),
    ("no content type", b'{"email": "a@example.com", "password": "12345678"}', {}, 415, "unsupported_media_type"),
    ("bogus content type", b"{}", {"Content-Type": "json"}, 415, "unsupported_media_type"),
]  # fmt: skip


async def test_bad_bodies_get_the_documented_4xx(client):
    for path in ("/signup", "/login"):
        for case, data, headers, status, code in BAD_BODIES:
            response = await client.post(path, data=data, headers=headers)
            await assert_error(response, status, code, (path, case))


async def test_json_content_type_variants_are_accepted(client):
    for content_type in ("application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json"):
        body = json.dumps({"email": f"ct-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD})
        response = await client.post("/signup", data=body.encode(), headers={"Content-Type": content_type})
        assert response.status_code == 201, content_type


async def test_body_over_64_kib_is_413_json(client):
    def body_of(size: int) -> bytes:
        head = {"email": f"big-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD, "pad": ""}
        padding = size - len(orjson.dumps(head))
        return orjson.dumps({**head, "pad": "x" * padding})

    at_limit = body_of(LIMIT)
    assert len(at_limit) == LIMIT
    response = await client.post("/signup", data=at_limit, headers=JSON)
    assert response.status_code == 201  # unknown fields are ignored; the limit itself is allowed

    for size in (LIMIT + 1, 10 * LIMIT):
        response = await client.post("/signup", data=body_of(size), headers=JSON)
        body = await assert_error(response, 413, "payload_too_large", size)
        assert "65536" in body["message"]


async def test_connection_closes_when_the_body_was_left_unread(client):
    # hypercorn cannot reuse such a connection; without the header a keep-alive client's next request hangs.
    unread = [
        ("/signup", b"x" * (LIMIT + 1), JSON),  # 413
        ("/signup", b"{}", {"Content-Type": "text/plain"}),  # 415
        ("/stories", b'{"text": "hi", "visibility": "public"}', JSON),  # 401 before the body is read
        ("/nope", b"{}", JSON),  # 404
    ]
    # (Quart's test client sends no Content-Length of its own; a real client always does.)
    for path, data, headers in unread:
        response = await client.post(path, data=data, headers={**headers, "Content-Length": str(len(data))})
        assert response.headers.get("Connection") == "close", path
    read = [("/signup", b"[]", JSON), ("/login", b'{"email": "a@example.com", "password": "12345678"}', JSON)]
    for path, data, headers in read:
        response = await client.post(path, data=data, headers={**headers, "Content-Length": str(len(data))})
        assert "Connection" not in response.headers, path
    assert "Connection" not in (await client.get("/healthz")).headers


async def test_unknown_route_and_wrong_method_are_json(client):
    for method, path in (("GET", "/nope"), ("POST", "/nope/deeper"), ("DELETE", "/signup/extra"), ("GET", "/")):
        response = await client.open(path, method=method)
        await assert_error(response, 404, "not_found", path)

    for method, path in (("GET", "/signup"), ("PUT", "/login"), ("DELETE", "/signup"), ("POST", "/healthz")):
        response = await client.open(path, method=method)
        await assert_error(response, 405, "method_not_allowed", (method, path))
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        assert allowed >= ({"GET"} if path == "/healthz" else {"POST"}), allowed


async def test_plain_http_to_the_websocket_route_is_426_json(client):
    # Schemathesis found it: a GET /ws without an upgrade answered 400 with werkzeug's generic message.
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        response = await client.get("/ws", headers=headers)
        await assert_error(response, 426, "upgrade_required", headers)
        assert response.headers["Upgrade"] == "websocket"
        assert "WebSocket" in (await response.get_json())["message"]


async def test_an_unexpected_exception_is_a_generic_500_that_reveals_nothing(client, log_lines):
    account = await signup(client)
    response = await client.get("/_test/boom", headers=account.auth)
    body = await assert_error(response, 500, "internal_error")
    assert "RuntimeError" not in body["message"]
    assert "bug" not in body["message"]
    unhandled = [line for line in log_lines() if line["event"] == "http.unhandled"]
    assert len(unhandled) == 1
    assert "RuntimeError" in unhandled[0]["exception"]
    assert unhandled[0]["request_id"] == response.headers["X-Request-ID"]


# --- X-Request-ID ----------------------------------------------------------------------------------------


async def test_request_id_is_echoed_when_sane_and_generated_otherwise(client):
    for sane in ("abc-123", "0f8e2c1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b", "trace:1.2_x", "x" * 128):
        response = await client.get("/healthz", headers={"X-Request-ID": sane})
        assert response.headers["X-Request-ID"] == sane

    for insane in (None, "", "x" * 129, "has spaces", "semi;colon", "<script>", 'quote"d', "a/b"):
        headers = {} if insane is None else {"X-Request-ID": insane}
        response = await client.get("/healthz", headers=headers)
        assert GENERATED_ID.match(response.headers["X-Request-ID"]), insane

    # Errors carry it too, and two requests never share a generated one.
    first, second = await client.get("/nope"), await client.post("/signup", data=b"{", headers=JSON)
    assert GENERATED_ID.match(first.headers["X-Request-ID"])
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


# --- CORS ------------------------------------------------------------------------------------------------


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_cors_preflight_is_answered_for_allowed_origins_only(client):
    for origin in ("http://localhost:3000", "http://localhost:5173"):
        for path, method in (("/signup", "POST"), ("/feed", "GET")):
            response = await client.options(path, headers=preflight(origin, method))
            assert response.status_code in (200, 204), (path, await response.get_data())
            assert response.headers["Access-Control-Allow-Origin"] == origin
            assert method in response.headers["Access-Control-Allow-Methods"]
            allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
            assert "authorization" in allowed_headers
            assert "content-type" in allowed_headers
            assert response.headers["X-Request-ID"]

    response = await client.options("/signup", headers=preflight("http://evil.example"))
    assert response.status_code < 500
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Methods" not in response.headers


async def test_cors_headers_on_actual_responses(client):
    response = await client.get("/healthz", headers={"Origin": "http://localhost:3000"})
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "x-request-id" in response.headers["Access-Control-Expose-Headers"].lower()
    response = await client.get("/healthz", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


# --- metrics and logs ------------------------------------------------------------------------------------


def samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{") or line.startswith(name + " ")]


async def test_metrics_use_route_templates(client):
    account = await signup(client)
    raw_id = str(uuid.uuid4())
    await client.get(f"/stories/{raw_id}", headers=account.auth)
    await client.get(f"/stories/{uuid.uuid4()}")
    await client.get(f"/nope/{raw_id}")
    await client.post("/signup", data=b"{", headers=JSON)

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = (await response.get_data()).decode()

    requests = samples(text, "http_requests_total")
    assert 'http_requests_total{code="201",method="POST",route="/signup"} 1.0' in requests
    assert 'http_requests_total{code="400",method="POST",route="/signup"} 1.0' in requests
    # The template's parameter name belongs to the stories module; only its shape matters here.
    story_route = re.compile(r'^http_requests_total\{code="(\d+)",method="GET",route="/stories/\{[a-z_]+\}"\} 1\.0$')
    assert sorted(m[1] for line in requests if (m := story_route.match(line))) == ["401", "404"]
    assert 'http_requests_total{code="404",method="GET",route="unmatched"} 1.0' in requests
    assert raw_id not in text
    assert samples(text, "http_request_duration_seconds_bucket")
    assert 'http_request_duration_seconds_count{method="POST",route="/signup"} 2.0' in text
    assert "# TYPE actor_restarts_total counter" in text


async def test_one_log_line_per_request(client, log_lines):
    response = await client.post("/signup", data=b"[]", headers={**JSON, "X-Request-ID": "req-42"})
    assert response.status_code == 400
    await client.get("/nope")
    requests = [line for line in log_lines() if line["event"] == "http.request"]
    assert len(requests) == 2
    first, second = requests
    assert first["method"] == "POST"
    assert first["route"] == "/signup"
    assert first["status"] == 400
    assert first["request_id"] == "req-42"
    assert isinstance(first["duration_ms"], float | int)
    assert first["duration_ms"] >= 0
    assert first["level"] == "info"
    assert (second["route"], second["status"]) == ("unmatched", 404)
    assert GENERATED_ID.match(second["request_id"])


async def test_auth_events_never_contain_the_password_or_the_token(client, log_lines):
    secret_password = "hunter2-but-longer-and-unique"
    email = f"log-{uuid.uuid4().hex[:8]}@example.com"
    signed_up = await (await client.post("/signup", json={"email": email, "password": secret_password})).get_json()
    await client.post("/signup", json={"email": email, "password": secret_password})
    logged_in = await (await client.post("/login", json={"email": email, "password": secret_password})).get_json()
    await client.post("/login", json={"email": email, "password": secret_password + "x"})

    lines = log_lines()
    events = [(line["action"], line["outcome"]) for line in lines if line["event"] == "auth"]
    assert events == [("signup", "ok"), ("signup", "email_taken"), ("login", "ok"), ("login", "invalid_credentials")]
    assert all("request_id" in line for line in lines if line["event"] == "auth")
    everything = orjson.dumps(lines).decode()
    assert secret_password not in everything
    for token in (signed_up["token"], logged_in["token"]):
        assert token not in everything
        assert token.split(".")[2] not in everything


async def test_unknown_methods_share_one_metrics_label(client, metrics):
    for method in ("BREW", "PROPFIND", "X-RANDOM-1"):
        response = await client.open("/healthz", method=method)
        assert response.status_code == 405
    exported = metrics.render().decode()
    assert 'method="other"' in exported
    assert "BREW" not in exported
    assert "PROPFIND" not in exported


def test_library_logs_are_json_lines_without_tracebacks(log_lines):
    try:
        raise ConnectionResetError("peer reset")
    except ConnectionResetError:
        logging.getLogger("asyncpg.pool").warning("Failed to restore the pool connection floor", exc_info=True)
    (line,) = [line for line in log_lines() if line["event"] == "library.log"]
    assert line["logger"] == "asyncpg.pool"
    assert line["error"] == "ConnectionResetError('peer reset')"
    assert "Traceback" not in json.dumps(line)


async def test_cors_grants_only_allowed_headers_and_every_response_varies_on_origin(client):
    headers = preflight("http://localhost:3000", "GET") | {"Access-Control-Request-Headers": "Authorization, X-Evil"}
    response = await client.options("/feed", headers=headers)
    assert response.headers["Access-Control-Allow-Headers"] == "authorization"
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in response.headers["Vary"]
    plain = await client.get("/healthz")
    assert plain.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Origin" not in plain.headers
