"""A valid token whose user does not exist is a 401 on every route (issue 7, defect 1): never a 500, never served."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers import signup
from tests.sql import sql_connection

ROUTES = [
    ("GET", "/feed", None),
    ("GET", "/me/stats", None),
    ("POST", "/stories", {"text": "hi", "visibility": "public"}),
    ("GET", "/stories/{story}", None),
    ("POST", "/stories/{story}/view", None),
    ("POST", "/stories/{story}/reactions", {"emoji": "🔥"}),
    ("POST", "/follow/{author}", None),
    ("DELETE", "/follow/{author}", None),
    ("GET", "/me", None),
    ("PATCH", "/me", {"display_name": "Ghost"}),
    ("GET", "/users/{author}", None),
    ("GET", "/users/{author}/followers", None),
    ("DELETE", "/stories/{story}", None),
    ("GET", "/stories/{story}/viewers", None),
    ("POST", "/blocks/{author}", None),
    ("DELETE", "/blocks/{author}", None),
    ("GET", "/me/blocks", None),
    ("POST", "/mutes/{author}", None),
    ("GET", "/me/mutes", None),
]


async def _call(client, method: str, path: str, body, headers):
    return await client.open(path, method=method, json=body, headers=headers)


@pytest.fixture
async def story(client):
    author = await signup(client)
    created = await client.post("/stories", json={"text": "public", "visibility": "public"}, headers=author.auth)
    return author, (await created.get_json())["id"]


@pytest.mark.parametrize(("method", "template", "body"), ROUTES)
async def test_a_token_for_a_user_who_never_existed_is_401(client, app_deps, story, method, template, body):
    author, story_id = story
    ghost = {"Authorization": f"Bearer {app_deps.tokens.issue(uuid.uuid4(), uuid.uuid4())}"}
    response = await _call(client, method, template.format(story=story_id, author=author.user_id), body, ghost)
    assert response.status_code == 401, await response.get_data()
    assert (await response.get_json())["error"] == "unauthorized"


# Writes (a foreign key or a missing row tells the store), and GET /me, which reads the caller's own row.
CHECKED_BY_THE_STORE = [r for r in ROUTES if r[0] in ("POST", "PATCH")] + [("GET", "/me", None)]


@pytest.mark.parametrize(("method", "template", "body"), CHECKED_BY_THE_STORE)
async def test_a_user_deleted_while_known_gets_401_on_writes(client, story, database_url, method, template, body):
    # The user passed the auth hook's existence check (cached for a minute), then vanished: the write's foreign
    # key tells, and the answer is still a 401, not a 500.
    author, story_id = story
    doomed = await signup(client)
    assert (await client.get("/feed", headers=doomed.auth)).status_code == 200
    async with sql_connection(database_url) as connection:
        await connection.execute("DELETE FROM users WHERE id = $1", uuid.UUID(doomed.user_id))
    response = await _call(client, method, template.format(story=story_id, author=author.user_id), body, doomed.auth)
    assert response.status_code == 401, await response.get_data()
