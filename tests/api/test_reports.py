"""Reports (API.md "Reports and moderation"): validation, one report per (reporter, target), idempotency, and what
a report hides: the story from its reporter at once, and from everyone but its author at REPORT_HIDE_THRESHOLD."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import trio

from stories.store import stories as story_sql
from stories.store import visibility
from tests.helpers import post_story, signup
from tests.sql import fetch

THRESHOLD = 3


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, report_hide_threshold=THRESHOLD)


async def feed_ids(client, account):
    response = await client.get("/feed?limit=100", headers=account.auth)
    assert response.status_code == 200
    return {story["id"] for story in (await response.get_json())["stories"]}


async def tray_ids(client, account):
    """Every story of the caller's tray (one page of 50 authors is all these tests have)."""
    response = await client.get("/tray?limit=50", headers=account.auth)
    assert response.status_code == 200
    return {story["id"] for group in (await response.get_json())["authors"] for story in group["stories"]}


async def report(client, account, path, body=None, headers=None):
    response = await client.post(
        path, json={"reason": "spam"} if body is None else body, headers={**account.auth, **(headers or {})}
    )
    return response.status_code, await response.get_json()


async def reads(client, account, story_id):
    """The status of every direct read of the story: GET, view, react."""
    get = await client.get(f"/stories/{story_id}", headers=account.auth)
    view = await client.post(f"/stories/{story_id}/view", headers=account.auth)
    react = await client.post(f"/stories/{story_id}/reactions", json={"emoji": "🔥"}, headers=account.auth)
    return get.status_code, view.status_code, react.status_code


async def test_a_report_is_created_once_and_a_repeat_answers_the_existing_one(client):
    ada, bob = await signup(client), await signup(client)
    story_id = await post_story(client, bob)
    status, first = await report(client, ada, f"/stories/{story_id}/report", {"reason": "spam", "note": "ads"})
    assert status == 201
    assert set(first) == {"report_id", "status"}
    assert first["status"] == "open"
    uuid.UUID(first["report_id"])
    # A repeat, even with another reason, is the existing report (the story is hidden from ada by now).
    assert await report(client, ada, f"/stories/{story_id}/report", {"reason": "hate"}) == (200, first)
    status, user_report = await report(client, ada, f"/users/{bob.user_id}/report", {"reason": "harassment"})
    assert (status, user_report["status"]) == (201, "open")
    assert user_report["report_id"] != first["report_id"]
    assert await report(client, ada, f"/users/{bob.user_id}/report") == (200, user_report)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "reason"),
        ({"reason": "boring"}, "reason"),
        ({"reason": 3}, "reason"),
        ({"reason": "SPAM"}, "reason"),
        ({"reason": "other", "note": "x" * 501}, "note"),
        ({"reason": "other", "note": 5}, "note"),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(client, body, field):
    ada, bob = await signup(client), await signup(client)
    story_id = await post_story(client, bob)
    for path in (f"/stories/{story_id}/report", f"/users/{bob.user_id}/report"):
        status, error = await report(client, ada, path, body)
        assert status == 400
        assert error["error"] == "invalid_request"
        assert field in error["fields"]


async def test_a_note_of_500_characters_is_accepted_and_a_non_json_body_is_415(client):
    ada, bob = await signup(client), await signup(client)
    story_id = await post_story(client, bob)
    assert (await report(client, ada, f"/stories/{story_id}/report", {"reason": "other", "note": "é" * 500}))[0] == 201
    response = await client.post(f"/users/{bob.user_id}/report", data="reason=spam", headers=ada.auth)
    assert response.status_code == 415


async def test_reporting_yourself_or_your_own_story_is_400(client):
    ada = await signup(client)
    story_id = await post_story(client, ada)
    for path in (f"/stories/{story_id}/report", f"/users/{ada.user_id}/report"):
        status, error = await report(client, ada, path)
        assert (status, error["error"]) == (400, "invalid_request")


async def test_only_what_the_reporter_may_see_can_be_reported(client):
    ada, bob, cy = await signup(client), await signup(client), await signup(client)
    private = await post_story(client, bob, "private")
    friends = await post_story(client, bob, "friends")
    cy_story = await post_story(client, cy)
    assert await client.post(f"/blocks/{ada.user_id}", headers=cy.auth)  # cy blocks ada
    for path in (
        f"/stories/{private}/report",
        f"/stories/{friends}/report",  # ada does not follow bob
        f"/stories/{cy_story}/report",  # blocked
        f"/stories/{uuid.uuid4()}/report",
        "/stories/not-an-id/report",
        f"/users/{uuid.uuid4()}/report",
        "/users/not-an-id/report",
        f"/users/{cy.user_id}/report",  # cy has blocked ada: as GET /users/{id}, not found
    ):
        status, error = await report(client, ada, path)
        assert (status, error["error"]) == (404, "not_found"), path
    # The one who blocked can still report the other.
    assert (await report(client, cy, f"/users/{ada.user_id}/report"))[0] == 201


async def test_a_reported_story_leaves_the_reporters_reads_at_once_and_no_one_elses(client):
    ada, bob, cy = await signup(client), await signup(client), await signup(client)
    story_id = await post_story(client, bob)
    other = await post_story(client, bob)
    # Both feeds are cached first: the report must apply to ada's next read all the same.
    assert {story_id, other} <= await feed_ids(client, ada)
    assert story_id in await feed_ids(client, cy)
    assert (await report(client, ada, f"/stories/{story_id}/report"))[0] == 201
    assert story_id not in await feed_ids(client, ada)
    assert other in await feed_ids(client, ada)
    assert await reads(client, ada, story_id) == (404, 404, 404)
    assert story_id in await feed_ids(client, cy)
    assert await reads(client, cy, story_id) == (200, 200, 201)
    assert await reads(client, bob, story_id) == (200, 200, 201)
    # Reporting the author is not reporting the story: their other stories stay.
    assert (await report(client, ada, f"/users/{bob.user_id}/report"))[0] == 201
    assert other in await feed_ids(client, ada)


async def test_a_reported_story_leaves_the_reporters_cached_tray_at_once_and_no_one_elses(client):
    ada, bob, cy = await signup(client), await signup(client), await signup(client)
    story_id = await post_story(client, bob)
    other = await post_story(client, bob)
    assert {story_id, other} <= await tray_ids(client, ada)  # cached
    assert story_id in await tray_ids(client, cy)
    assert (await report(client, ada, f"/stories/{story_id}/report"))[0] == 201
    assert await tray_ids(client, ada) >= {other}
    assert story_id not in await tray_ids(client, ada)
    assert story_id in await tray_ids(client, cy)
    author_stories = await client.get(f"/users/{bob.user_id}/stories", headers=ada.auth)
    assert [story["id"] for story in (await author_stories.get_json())["stories"]] == [other]


async def test_a_held_story_leaves_every_cached_tray_but_its_authors(client):
    author, reader = await signup(client), await signup(client)
    reporters = [await signup(client) for _ in range(THRESHOLD)]
    story_id = await post_story(client, author)
    assert story_id in await tray_ids(client, reader)  # cached
    for reporter in reporters:
        assert (await report(client, reporter, f"/stories/{story_id}/report"))[0] == 201
    assert story_id not in await tray_ids(client, reader)
    assert story_id in await tray_ids(client, author)


async def test_the_threshold_holds_a_story_for_everyone_but_its_author(client, app_deps):
    author, reader = await signup(client), await signup(client)
    reporters = [await signup(client) for _ in range(THRESHOLD)]
    story_id = await post_story(client, author)
    assert story_id in await feed_ids(client, reader)  # cached
    for reporter in reporters[:-1]:
        assert (await report(client, reporter, f"/stories/{story_id}/report"))[0] == 201
    assert story_id in await feed_ids(client, reader)
    assert await reads(client, reader, story_id) == (200, 200, 201)
    assert (await report(client, reporters[-1], f"/stories/{story_id}/report"))[0] == 201
    assert story_id not in await feed_ids(client, reader)
    assert await reads(client, reader, story_id) == (404, 404, 404)
    assert story_id in await feed_ids(client, author)
    assert await reads(client, author, story_id) == (200, 200, 201)
    # Held, it is not there to report any more; those who reported it keep their report.
    late = await signup(client)
    assert (await report(client, late, f"/stories/{story_id}/report"))[0] == 404
    assert (await report(client, reporters[0], f"/stories/{story_id}/report"))[0] == 200
    # Reporting the author (user reports) never holds a story.
    held = await fetch(
        app_deps.settings.database_url,
        "SELECT count(*) AS n FROM stories WHERE author_id = $1 AND held_at IS NOT NULL",
        uuid.UUID(author.user_id),
    )
    assert held[0]["n"] == 1


async def test_reports_of_the_same_story_from_many_users_at_once_hold_it_exactly_at_the_threshold(client, app_deps):
    author = await signup(client)
    reporters = [await signup(client) for _ in range(THRESHOLD + 2)]
    story_id = await post_story(client, author)
    statuses = []

    async def file(reporter):
        statuses.append((await report(client, reporter, f"/stories/{story_id}/report"))[0])

    async with trio.open_nursery() as nursery:
        for reporter in reporters:
            nursery.start_soon(file, reporter)
    # A held story is hidden from all but its author: a reporter whose request read it after the hold is 404.
    assert set(statuses) <= {201, 404}
    filed = statuses.count(201)
    assert filed >= THRESHOLD
    rows = await fetch(
        app_deps.settings.database_url,
        "SELECT (SELECT count(*) FROM report_cases WHERE story_id = $1) AS cases,"
        " (SELECT count(*) FROM reports WHERE story_id = $1) AS reports,"
        " (SELECT held_at IS NOT NULL FROM stories WHERE id = $1) AS held",
        uuid.UUID(story_id),
    )
    assert (rows[0]["cases"], rows[0]["reports"], rows[0]["held"]) == (1, filed, True)


async def test_idempotency_key_replays_the_first_response_and_refuses_another_request(client):
    ada, bob = await signup(client), await signup(client)
    story_id, other = await post_story(client, bob), await post_story(client, bob)
    key = {"Idempotency-Key": "report-1"}
    path = f"/stories/{story_id}/report"
    first = await client.post(path, json={"reason": "spam"}, headers={**ada.auth, **key})
    assert first.status_code == 201
    again = await client.post(path, json={"reason": "spam"}, headers={**ada.auth, **key})
    assert again.status_code == 201
    assert again.headers["Idempotent-Replay"] == "true"
    assert await again.get_json() == await first.get_json()
    other_body = await client.post(path, json={"reason": "hate"}, headers={**ada.auth, **key})
    assert (other_body.status_code, (await other_body.get_json())["error"]) == (422, "idempotency_key_reused")
    # The same body for another target is another request.
    other_target = await client.post(f"/stories/{other}/report", json={"reason": "spam"}, headers={**ada.auth, **key})
    assert other_target.status_code == 422
    bad = await client.post(path, json={"reason": "spam"}, headers={**ada.auth, "Idempotency-Key": "a b"})
    assert bad.status_code == 400


async def test_a_repeat_with_a_new_key_is_200_and_leaves_the_key_free(client):
    ada, bob = await signup(client), await signup(client)
    story_id = await post_story(client, bob)
    path = f"/stories/{story_id}/report"
    first = await report(client, ada, path)
    assert await report(client, ada, path, headers={"Idempotency-Key": "k"}) == (200, first[1])
    # Nothing was created under "k": it is free for a new request.
    status, _ = await report(client, ada, f"/users/{bob.user_id}/report", headers={"Idempotency-Key": "k"})
    assert status == 201


async def test_two_concurrent_requests_with_one_key_create_one_report(client, app_deps):
    ada, bob = await signup(client), await signup(client)
    path = f"/users/{bob.user_id}/report"
    answers = []

    async def send():
        answers.append(await report(client, ada, path, headers={"Idempotency-Key": "same"}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        nursery.start_soon(send)
    assert [status for status, _ in answers] == [201, 201]
    assert answers[0][1] == answers[1][1]
    rows = await fetch(
        app_deps.settings.database_url, "SELECT count(*) AS n FROM reports WHERE user_id = $1", uuid.UUID(bob.user_id)
    )
    assert rows[0]["n"] == 1


async def test_a_deleted_reporters_reports_stay_anonymous(client, app_deps):
    ada, bob = await signup(client), await signup(client)
    story_id = await post_story(client, bob)
    assert (await report(client, ada, f"/stories/{story_id}/report"))[0] == 201
    assert (await report(client, ada, f"/users/{bob.user_id}/report"))[0] == 201
    url = app_deps.settings.database_url
    await fetch(url, "DELETE FROM users WHERE id = $1", uuid.UUID(ada.user_id))
    rows = await fetch(url, "SELECT reporter_id, reason FROM reports WHERE user_id = $1", uuid.UUID(bob.user_id))
    assert [(row["reporter_id"], row["reason"]) for row in rows] == [(None, "spam"), (None, "spam")]


async def test_reports_are_counted_by_reason(client, metrics):
    ada, bob, cy = await signup(client), await signup(client), await signup(client)
    story_id = await post_story(client, bob)
    await report(client, ada, f"/stories/{story_id}/report", {"reason": "nudity"})
    await report(client, ada, f"/stories/{story_id}/report", {"reason": "nudity"})  # a repeat counts nothing
    await report(client, cy, f"/users/{bob.user_id}/report", {"reason": "self_harm"})
    text = (await (await client.get("/metrics")).get_data()).decode()
    assert 'reports_total{reason="nudity"} 1.0' in text
    assert 'reports_total{reason="self_harm"} 1.0' in text


def test_every_read_of_stories_carries_the_one_moderation_fragment():
    """visibility.READABLE is where reports, holds and suspensions hide stories: the point reads (GET, view, react,
    a report's own target check) and the feed's three branches all include it, so a list built on either does."""
    assert visibility.READABLE in visibility.VISIBLE
    assert visibility.VISIBLE in visibility.VISIBLE_AUTHOR_SQL
    for sql in (story_sql.FEED_SQL, story_sql.FEED_AFTER_SQL):
        assert sql.count(visibility.READABLE) == 3
