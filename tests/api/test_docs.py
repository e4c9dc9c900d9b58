"""GET /openapi.json is the app: every route with its methods, nothing more, valid OpenAPI 3.1 whose examples and
schemas match what the app answers; GET /docs is Swagger UI from this process alone."""

import re
import uuid

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from stories.api.docs import SWAGGER_UI_FILES
from stories.api.hooks import public_endpoints
from tests.helpers import Account, signup

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


async def _document(client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return await response.get_json()


def _served(app):
    """(path template, method) of every route the app serves, with the endpoints behind them."""
    served = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":  # Quart's own, absent while the package has no static folder
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        methods = {"GET"} if rule.websocket else rule.methods - {"HEAD", "OPTIONS"}
        for method in methods:
            served[(path, method.lower())] = rule.endpoint
    return served


def _operations(doc):
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def _schema_validator(doc, schema):
    """A JSON Schema 2020-12 validator for `schema`, its `#/components/...` references resolved in `doc`."""
    registry = Registry().with_resource("urn:openapi", Resource.from_contents(doc, default_specification=DRAFT202012))
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "urn:schema", **schema}
    rewritten = _rebase_refs(root)
    return Draft202012Validator(rewritten, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _rebase_refs(node):
    if isinstance(node, dict):
        return {
            key: "urn:openapi" + value if key == "$ref" and value.startswith("#/") else _rebase_refs(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rebase_refs(item) for item in node]
    return node


async def test_openapi_documents_every_route_and_nothing_else(app, client):
    doc = await _document(client)
    assert doc["openapi"] == "3.1.0"
    served = set(_served(app))
    documented = {(path, method) for path, method, _ in _operations(doc)}
    assert not served - documented, f"served but not in /openapi.json: {sorted(served - documented)}"
    assert not documented - served, f"in /openapi.json but not served: {sorted(documented - served)}"


async def test_the_document_is_valid_openapi_3_1(client):
    validate_openapi(await _document(client))


async def test_public_routes_are_the_ones_without_security(app, client):
    doc = await _document(client)
    endpoints = _served(app)
    for path, method, operation in _operations(doc):
        public = operation.get("security") == []
        assert public == (endpoints[(path, method)] in public_endpoints(app)), (method, path)
        if not public:
            assert "401" in operation["responses"], (method, path)


async def test_every_operation_documents_its_errors_429s_and_503s(client):
    doc = await _document(client)
    operation_ids = [operation["operationId"] for _, _, operation in _operations(doc)]
    assert len(operation_ids) == len(set(operation_ids))
    for path, method, operation in _operations(doc):
        responses = operation["responses"]
        assert operation["summary"], (method, path)
        assert operation["tags"], (method, path)
        assert any(code.startswith("2") or code == "101" for code in responses), (method, path)
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= set(responses), (method, path)
        if any(parameter["in"] == "path" for parameter in operation.get("parameters", [])):
            assert "404" in responses, (method, path)
        if operation.get("security") != []:
            # Every route behind a token reads the database and runs under REQUEST_TIMEOUT_SECONDS; the WebSocket
            # upgrade too (tests/api/test_ws.py: a store outage during the upgrade is refused with 503).
            assert "503" in responses, (method, path)
    limited = {(path, method) for path, method, operation in _operations(doc) if "429" in operation["responses"]}
    assert limited == {
        ("/login", "post"),
        ("/me", "delete"),
        ("/me/export", "get"),
        ("/me/password", "post"),
        ("/stories", "post"),
        ("/stories/{id}/reactions", "post"),
        ("/upload/presigned", "post"),
    }
    unavailable = doc["components"]["responses"]["Unavailable"]["content"]["application/json"]["schema"]
    assert unavailable["allOf"][1]["properties"]["error"]["enum"] == ["database_unavailable", "overloaded"]
    upload = doc["paths"]["/upload/presigned"]["post"]["responses"]["503"]["content"]["application/json"]["schema"]
    assert "storage_unavailable" in upload["allOf"][1]["properties"]["error"]["enum"]


async def test_examples_match_their_schemas(client):
    doc = await _document(client)
    checked = 0
    responses = doc["components"]["responses"]
    for path, method, operation in _operations(doc):
        media_types = []
        if "requestBody" in operation:
            media_types.append(("request", operation["requestBody"]["content"]["application/json"]))
        for status, response in operation["responses"].items():
            if "$ref" in response:
                response = responses[response["$ref"].rsplit("/", 1)[1]]
            for media in response.get("content", {}).values():
                media_types.append((status, media))
        for where, media in media_types:
            if "example" in media:
                errors = list(_schema_validator(doc, media["schema"]).iter_errors(media["example"]))
                assert not errors, (method, path, where, [error.message for error in errors])
                checked += 1
    assert checked >= 40


async def test_success_answers_match_the_document(app, client):
    """A walk through the API: each answer validates against its documented status and schema (Schemathesis
    does this at scale in .ci/run, against a real server)."""
    doc = await _document(client)
    ada = await signup(client, display_name="Ada")
    bob = await signup(client)

    async def call(method, path, template, *, account=ada, **kwargs):
        response = await client.open(path, method=method.upper(), headers=account.auth, **kwargs)
        documented = doc["paths"][template][method]["responses"]
        status = str(response.status_code)
        assert status in documented, (method, path, status, await response.get_data())
        answer = documented[status]
        if "$ref" in answer:
            answer = doc["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
        if "content" not in answer:
            assert not await response.get_data()
            return None
        assert response.mimetype in answer["content"], (method, path, response.mimetype)
        schema = answer["content"][response.mimetype]["schema"]
        if response.mimetype != "application/json":
            return None
        body = await response.get_json()
        errors = [error.message for error in _schema_validator(doc, schema).iter_errors(body)]
        assert not errors, (method, path, status, body, errors)
        return body

    story = await call("post", "/stories", "/stories", json={"text": "hi", "visibility": "public"})
    await call("post", "/stories", "/stories", json={"text": "for friends", "visibility": "friends"}, account=bob)
    story_path = f"/stories/{story['id']}"
    await call("post", "/login", "/login", json={"email": ada.email, "password": "correct horse battery"})
    await call("post", "/login", "/login", json={"email": ada.email, "password": "wrong password"})
    await call("post", "/signup", "/signup", json={"email": ada.email, "password": "correct horse battery"})
    await call("get", "/me", "/me")
    await call("patch", "/me", "/me", json={"display_name": None})
    await call("patch", "/me", "/me", json={"email": "x@example.com"})
    await call("post", f"/follow/{ada.user_id}", "/follow/{user_id}", account=bob)
    await call("get", f"/users/{ada.user_id}", "/users/{id}", account=bob)
    await call("get", f"/users/{ada.user_id}/followers", "/users/{id}/followers")
    await call("get", f"/users/{bob.user_id}/following?limit=1", "/users/{id}/following")
    await call("get", story_path, "/stories/{id}", account=bob)
    await call("post", f"{story_path}/view", "/stories/{id}/view", account=bob)
    await call("post", f"{story_path}/reactions", "/stories/{id}/reactions", json={"emoji": "❤"}, account=bob)
    await call("get", f"{story_path}/viewers", "/stories/{id}/viewers")
    await call("get", "/feed?limit=1", "/feed", account=bob)
    await call("get", "/feed?cursor=nope", "/feed")
    await call("get", "/me/stats", "/me/stats")
    events = await call("get", "/me/events", "/me/events")
    assert [event["type"] for event in events["events"]] == ["story.viewed", "story.reacted"]
    await call("get", f"/me/events?after={'0' * 32}", "/me/events")  # not in the log: resync
    await call("get", "/me/events?after=nope", "/me/events")
    await call("post", f"/mutes/{bob.user_id}", "/mutes/{user_id}")
    await call("get", "/me/mutes", "/me/mutes")
    await call("delete", f"/mutes/{bob.user_id}", "/mutes/{user_id}")
    await call("post", f"/blocks/{bob.user_id}", "/blocks/{user_id}")
    await call("get", "/me/blocks", "/me/blocks")
    await call("get", f"/users/{ada.user_id}", "/users/{id}", account=bob)
    await call("delete", f"/blocks/{bob.user_id}", "/blocks/{user_id}")
    await call("delete", f"/follow/{ada.user_id}", "/follow/{user_id}", account=bob)
    await call("post", "/upload/presigned", "/upload/presigned", json={"content_type": "image/png", "size": 1})
    report = await call("post", f"{story_path}/report", "/stories/{id}/report", json={"reason": "spam"}, account=bob)
    await call("post", f"{story_path}/report", "/stories/{id}/report", json={"reason": "spam"}, account=bob)
    await call("post", f"/users/{ada.user_id}/report", "/users/{id}/report", json={"reason": "other"}, account=bob)
    await call("post", f"/users/{bob.user_id}/report", "/users/{id}/report", json={"reason": "x"}, account=bob)
    await call("get", "/admin/reports", "/admin/reports", account=bob)  # not a moderator: 404
    assert await app.deps.store.set_moderator(bob.email, True, app.deps.clock.now())
    await call("get", "/admin/reports?status=open&limit=1", "/admin/reports", account=bob)
    resolve = "/admin/reports/{id}/resolve"
    await call("post", resolve.format(id=report["report_id"]), resolve, json={"action": "nope"}, account=bob)
    await call("post", resolve.format(id=report["report_id"]), resolve, json={"action": "dismiss"}, account=bob)
    await call("post", resolve.format(id=report["report_id"]), resolve, json={"action": "remove_story"}, account=bob)
    await call("get", "/admin/reports?status=resolved", "/admin/reports", account=bob)
    unsuspend = f"/admin/users/{ada.user_id}/unsuspend"
    await call("post", unsuspend, "/admin/users/{id}/unsuspend", account=bob)
    await call("post", unsuspend, "/admin/users/{id}/unsuspend", json={"note": "ok"}, account=bob)
    await call("get", "/admin/audit?limit=1", "/admin/audit", account=bob)
    await call("delete", story_path, "/stories/{id}")
    await call("get", story_path, "/stories/{id}")
    await call("get", "/healthz", "/healthz")
    await call("get", "/readyz", "/readyz")
    await call("get", "/metrics", "/metrics")
    await call("get", "/ws", "/ws")
    await call("get", "/me", "/me", account=Account(ada.user_id, ada.email, "not-a-token"))
    # Sessions: a second session of Ada's, refreshed, listed, revoked; a password change; a logout.
    login = await call("post", "/login", "/login", json={"email": ada.email, "password": "correct horse battery"})
    second = Account(ada.user_id, ada.email, login["token"])
    refreshed = await call("post", "/token/refresh", "/token/refresh", json={"refresh_token": login["refresh_token"]})
    await call("post", "/token/refresh", "/token/refresh", json={"refresh_token": "not-a-refresh-token"})
    await call("post", "/token/refresh", "/token/refresh", json={"refresh_token": 7})
    listed = await call("get", "/me/sessions", "/me/sessions", account=second)
    assert {entry["session_id"] for entry in listed["sessions"] if entry["current"]}
    await call("delete", f"/me/sessions/{uuid.uuid4()}", "/me/sessions/{session_id}")
    await call("post", "/me/password", "/me/password", json={"current_password": "nope nope", "new_password": "x" * 8})
    await call("post", "/me/password", "/me/password", json={"current_password": "x"})
    await call(
        "post",
        "/me/password",
        "/me/password",
        json={"current_password": "correct horse battery", "new_password": "battery staple horse"},
    )
    await call("get", "/me", "/me", account=second)  # revoked by the password change: 401 session_revoked
    await call("post", "/token/refresh", "/token/refresh", json={"refresh_token": refreshed["refresh_token"]})
    await call("post", "/logout", "/logout")
    await call("post", "/logout", "/logout")


async def test_the_document_states_this_process_limits(app, client):
    doc = await _document(client)
    size = doc["paths"]["/upload/presigned"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert size["properties"]["size"]["maximum"] == app.deps.settings.max_upload_bytes
    too_large = doc["components"]["responses"]["PayloadTooLarge"]["description"]
    assert str(app.deps.settings.max_body_bytes) in too_large


async def test_docs_page_is_swagger_ui_served_by_this_process(client):
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = (await response.get_data()).decode()
    assert "http://" not in page
    assert "https://" not in page
    assert "SwaggerUIBundle(" in page
    assert '"/openapi.json"' in page
    assert "validatorUrl: null" in page  # else the page sends the document to the public validator
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert {asset.rsplit("/", 1)[1] for asset in assets} == set(SWAGGER_UI_FILES)
    for asset in assets:
        assert asset.startswith("/docs/static/"), asset
        file = await client.get(asset)
        assert file.status_code == 200, asset
        assert file.mimetype == SWAGGER_UI_FILES[asset.rsplit("/", 1)[1]]
        assert len(await file.get_data()) > 0
        assert "max-age" in file.headers["Cache-Control"]
        again = await client.get(asset, headers={"If-None-Match": file.headers["ETag"]})
        assert again.status_code == 304
        assert not await again.get_data()


@pytest.mark.parametrize(
    "path",
    [
        "/docs/static/swagger-ui.js",
        "/docs/static/LICENSE",
        "/docs/static/..%2F__init__.py",
        "/docs/static/../flask_swagger_ui.py",
        "/docs/static/",
    ],
)
async def test_docs_static_serves_the_browser_files_only(client, path):
    response = await client.get(path)
    assert response.status_code == 404
    assert (await response.get_json())["error"] == "not_found"
