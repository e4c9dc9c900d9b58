"""Load shedding at the HTTP layer: no request runs longer than REQUEST_TIMEOUT_SECONDS (API.md "Operations")."""

from __future__ import annotations

import dataclasses

import pytest
import trio
from quart import Response

from stories.api.json_io import json_response
from tests.helpers import signup


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, request_timeout_seconds=0.3)


@pytest.fixture
def app(app):  # extends the shared fixture with a route that hangs, as a hung dependency would
    async def hang() -> Response:
        await trio.sleep_forever()
        return json_response({})

    app.add_url_rule("/_test/hang", "test.hang", hang, methods=["GET"])
    return app


async def test_a_request_past_its_deadline_answers_503_overloaded(client):
    account = await signup(client)
    with trio.fail_after(5):
        response = await client.get("/_test/hang", headers=account.auth)
    assert response.status_code == 503
    assert await response.get_json() == {
        "error": "overloaded",
        "message": "the request took longer than 0.3 s; retry shortly",
    }
    assert response.headers["Retry-After"] == "1"
    assert response.headers["X-Request-ID"]
