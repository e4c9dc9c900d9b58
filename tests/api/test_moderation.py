"""Moderation (API.md "Reports and moderation"): the moderator role, /admin hidden from everyone else, the
reports queue grouped per target, decisions with their audit entries, suspension, and the open-reports gauges.

The queue and the audit log are global and the session's database is shared by every test: each test looks at the
entries about its own targets only (order among them is what the listing promises)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import pytest

from stories.actors.backlog import ReportBacklog
from stories.store.models import Backlog
from tests.helpers import post_story, signup, two_processes, walk_pages
from tests.sql import fetch

THRESHOLD = 2


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, report_hide_threshold=THRESHOLD)


async def moderator(client, app_deps, clock):
    account = await signup(client)
    assert await app_deps.store.set_moderator(account.email, True, clock.now()) is True
    return account


async def feed_ids(client, account):
    response = await client.get("/feed?limit=100", headers=account.auth)
    assert response.status_code == 200
    return {story["id"] for story in (await response.get_json())["stories"]}


async def report(client, account, path, reason="spam"):
    response = await client.post(path, json={"reason": reason}, headers=account.auth)
    assert response.status_code in (200, 201), await response.get_json()
    return (await response.get_json())["report_id"]


async def walk(client, account, query, key, limit):
    """Every entry of a paged /admin list, checking that pages are full but the last."""
    listed, cursor = [], None
    while True:
        page_query = f"{query}&limit={limit}" + ("" if cursor is None else f"&cursor={cursor}")
        response = await client.get(page_query, headers=account.auth)
        assert response.status_code == 200, await response.get_data()
        page = await response.get_json()
        listed.extend(page[key])
        cursor = page["next_cursor"]
        if cursor is None:
            return listed
        assert len(page[key]) == limit


async def entries(client, account, targets, status="open", limit=100):
    """The queue's entries about `targets` (ids), in the queue's order."""
    listed = await walk(client, account, f"/admin/reports?status={status}", "reports", limit)
    return [entry for entry in listed if entry["target_id"] in targets]


async def resolve(client, account, entry_id, action, note=None):
    body = {"action": action} if note is None else {"action": action, "note": note}
    response = await client.post(f"/admin/reports/{entry_id}/resolve", json=body, headers=account.auth)
    return response.status_code, await response.get_json()


async def audit(client, account, targets):
    """The audit entries about `targets` (ids), newest first."""
    listed = await walk_pages(client, account, "/admin/audit", "entries", 100)
    return [entry for entry in listed if entry["target_id"] in targets]


async def test_every_admin_route_is_404_to_non_moderators_as_an_unknown_route(client, app_deps, clock):
    ada, bob = await signup(client), await signup(client)
    report_id = await report(client, ada, f"/users/{bob.user_id}/report")
    unknown = await client.get("/admin/no-such-thing", headers=ada.auth)
    assert unknown.status_code == 404
    expected = await unknown.get_json()
    assert expected["error"] == "not_found"
    for method, path, body in (
        ("GET", "/admin/reports", None),
        ("GET", "/admin/reports?status=bogus", None),
        ("POST", f"/admin/reports/{report_id}/resolve", {"action": "dismiss"}),
        ("POST", f"/admin/reports/{report_id}/resolve", {"action": "nonsense"}),
        ("POST", f"/admin/users/{bob.user_id}/unsuspend", None),
        ("GET", "/admin/audit", None),
    ):
        response = await client.open(path, method=method, json=body, headers=ada.auth)
        assert response.status_code == 404, path
        assert await response.get_json() == expected, path
    # Without a token: 401, as on every route that needs one.
    assert (await client.get("/admin/reports")).status_code == 401
    # A grant applies at once, and so does a revoke.
    assert await app_deps.store.set_moderator(ada.email, True, clock.now()) is True
    assert await app_deps.store.set_moderator(ada.email, True, clock.now()) is False
    assert (await client.get("/admin/reports", headers=ada.auth)).status_code == 200
    assert await app_deps.store.set_moderator(ada.email, False, clock.now()) is True
    assert await app_deps.store.set_moderator(ada.email, False, clock.now()) is False
    assert (await client.get("/admin/reports", headers=ada.auth)).status_code == 404
    assert await app_deps.store.set_moderator("nobody@example.com", True, clock.now()) is None


async def test_reports_are_grouped_per_target_oldest_open_first(client, app_deps, clock):
    mod = await moderator(client, app_deps, clock)
    ada, bob, cy = await signup(client), await signup(client), await signup(client)
    story_id = await post_story(client, bob)
    first = await report(client, ada, f"/stories/{story_id}/report", "spam")
    clock.advance(1)
    await report(client, cy, f"/stories/{story_id}/report", "hate")
    clock.advance(1)
    await report(client, ada, f"/users/{cy.user_id}/report", "harassment")
    listed = await entries(client, mod, {story_id, cy.user_id})
    assert [entry["target_type"] for entry in listed] == ["story", "user"]
    story_entry, user_entry = listed
    assert story_entry["target_id"] == story_id
    assert story_entry["report_id"] == first  # the entry is named by its first report
    assert story_entry["reasons"] == {"spam": 1, "hate": 1}
    assert story_entry["reporters"] == 2
    assert story_entry["status"] == "open"
    assert story_entry["first_reported_at"] == "2026-11-24T10:00:00.000Z"
    assert story_entry["story"]["id"] == story_id
    assert story_entry["story"]["author_id"] == bob.user_id
    assert "media_url" in story_entry["story"]
    assert "user" not in story_entry
    assert story_entry["resolution"] is None
    assert user_entry["target_id"] == cy.user_id
    assert user_entry["user"]["user_id"] == cy.user_id
    assert "email" not in user_entry["user"]
    assert (user_entry["reasons"], user_entry["reporters"]) == ({"harassment": 1}, 1)
    assert await entries(client, mod, {story_id, cy.user_id}, "resolved") == []


async def test_the_queue_pages_like_the_feed(client, app_deps, clock):
    mod = await moderator(client, app_deps, clock)
    reporter = await signup(client)
    targets = [await signup(client) for _ in range(5)]
    for target in targets:
        clock.advance(1)
        await report(client, reporter, f"/users/{target.user_id}/report")
    ids = {t.user_id for t in targets}
    walked = await entries(client, mod, ids, limit=2)
    assert [entry["target_id"] for entry in walked] == [t.user_id for t in targets]
    for _ in targets[:3]:
        status, _ = await resolve(client, mod, (await entries(client, mod, ids))[0]["report_id"], "dismiss")
        assert status == 200
        clock.advance(1)
    resolved = await entries(client, mod, ids, "resolved", limit=2)
    # Resolved: the latest decision first.
    assert [entry["target_id"] for entry in resolved] == [t.user_id for t in reversed(targets[:3])]
    for query, field in (
        ("status=closed", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=@", "cursor"),
    ):
        response = await client.get(f"/admin/reports?{query}", headers=mod.auth)
        assert response.status_code == 400, query
        assert field in (await response.get_json())["fields"]


async def test_dismiss_makes_a_held_story_visible_again_and_is_audited(client, app_deps, clock):
    mod = await moderator(client, app_deps, clock)
    author, reader = await signup(client), await signup(client)
    reporters = [await signup(client) for _ in range(THRESHOLD)]
    story_id = await post_story(client, author)
    report_ids = [await report(client, r, f"/stories/{story_id}/report") for r in reporters]
    assert story_id not in await feed_ids(client, reader)
    # Any report of the entry names it.
    status, entry = await resolve(client, mod, report_ids[-1], "dismiss", note="satire")
    assert status == 200
    assert entry["report_id"] == report_ids[0]
    assert entry["status"] == "resolved"
    assert entry["resolution"]["action"] == "dismiss"
    assert entry["resolution"]["note"] == "satire"
    assert entry["resolution"]["moderator_id"] == mod.user_id
    # Visible again at once to direct reads; in cached feeds as other users' new stories are (FEED_CACHE_SECONDS).
    assert (await client.get(f"/stories/{story_id}", headers=reader.auth)).status_code == 200
    # The reporters still do not see what they reported.
    assert (await client.get(f"/stories/{story_id}", headers=reporters[0].auth)).status_code == 404
    # The same decision again changes nothing; another one is a conflict.
    assert await resolve(client, mod, report_ids[0], "dismiss", note="satire") == (200, entry)
    status, error = await resolve(client, mod, report_ids[0], "remove_story")
    assert (status, error["error"]) == (409, "already_resolved")
    assert await audit(client, mod, {story_id}) == [
        {
            "actor_id": mod.user_id,
            "action": "dismiss",
            "target_type": "story",
            "target_id": story_id,
            "note": "satire",
            "at": "2026-11-24T10:00:00.000Z",
        }
    ]
    # New reports after a decision open a new entry, counted afresh.
    late = await signup(client)
    await report(client, late, f"/stories/{story_id}/report")
    assert [e["reporters"] for e in await entries(client, mod, {story_id})] == [1]
    assert (await client.get(f"/stories/{story_id}", headers=reader.auth)).status_code == 200


async def test_resolve_validation(client, app_deps, clock):
    mod = await moderator(client, app_deps, clock)
    ada, bob = await signup(client), await signup(client)
    user_entry = await report(client, ada, f"/users/{bob.user_id}/report")
    for entry_id, body, status, code in (
        (uuid.uuid4(), {"action": "dismiss"}, 404, "not_found"),
        ("nope", {"action": "dismiss"}, 404, "not_found"),
        (user_entry, {"action": "ban"}, 400, "invalid_request"),
        (user_entry, {}, 400, "invalid_request"),
        (user_entry, {"action": "dismiss", "note": "n" * 501}, 400, "invalid_request"),
        (user_entry, {"action": "remove_story"}, 400, "invalid_request"),  # a user has no story to remove
    ):
        response = await client.post(f"/admin/reports/{entry_id}/resolve", json=body, headers=mod.auth)
        assert (response.status_code, (await response.get_json())["error"]) == (status, code), body


async def test_remove_story_deletes_it_for_everyone_as_its_author_would(client, app_deps, clock):
    mod = await moderator(client, app_deps, clock)
    author, reader, reporter = await signup(client), await signup(client), await signup(client)
    story_id = await post_story(client, author)
    assert story_id in await feed_ids(client, reader)  # cached
    entry_id = await report(client, reporter, f"/stories/{story_id}/report")
    status, entry = await resolve(client, mod, entry_id, "remove_story")
    assert (status, entry["resolution"]["action"]) == (200, "remove_story")
    for account in (author, reader):
        assert story_id not in await feed_ids(client, account)
        assert (await client.get(f"/stories/{story_id}", headers=account.auth)).status_code == 404
    rows = await fetch(
        app_deps.settings.database_url, "SELECT deleted_at FROM stories WHERE id = $1", uuid.UUID(story_id)
    )
    assert rows[0]["deleted_at"] is not None  # the media sweeper's sign, as for DELETE /stories/{id}
    # The author's own delete is then the idempotent 204.
    assert (await client.delete(f"/stories/{story_id}", headers=author.auth)).status_code == 204
    assert [(e["action"], e["target_id"]) for e in await audit(client, mod, {story_id})] == [("remove_story", story_id)]


async def test_a_removed_storys_media_is_due_for_the_sweeper(client, app_deps, clock):
    mod = await moderator(client, app_deps, clock)
    author, reporter = await signup(client), await signup(client)
    key = f"uploads/{author.user_id}/{uuid.uuid4().hex}.png"
    url = app_deps.settings.database_url
    # The key as POST /upload/presigned issues it (object storage is off here: the story takes it on trust).
    await fetch(
        url,
        "INSERT INTO media_uploads (key, user_id, content_type, size, issued_at) VALUES ($1, $2, 'image/png', 1, $3)",
        key,
        uuid.UUID(author.user_id),
        clock.now(),
    )
    response = await client.post("/stories", json={"media_key": key, "visibility": "public"}, headers=author.auth)
    assert response.status_code == 201
    story_id = (await response.get_json())["id"]
    entry_id = await report(client, reporter, f"/stories/{story_id}/report", "nudity")
    assert (await resolve(client, mod, entry_id, "remove_story"))[0] == 200
    rows = await fetch(url, "SELECT delete_after, delete_reason FROM media_uploads WHERE key = $1", key)
    assert (rows[0]["delete_after"], rows[0]["delete_reason"]) == (clock.now(), "story_deleted")


async def test_suspend_user_hides_every_story_of_theirs_until_unsuspended(client, app_deps, clock):
    mod = await moderator(client, app_deps, clock)
    author, reader, reporter = await signup(client), await signup(client), await signup(client)
    await client.post(f"/follow/{author.user_id}", headers=reader.auth)
    public, friends = await post_story(client, author), await post_story(client, author, "friends")
    assert {public, friends} <= await feed_ids(client, reader)  # cached
    entry_id = await report(client, reporter, f"/stories/{public}/report")
    status, entry = await resolve(client, mod, entry_id, "suspend_user", note="spam ring")
    assert (status, entry["user_suspended"]) == (200, True)
    rows = await fetch(
        app_deps.settings.database_url, "SELECT suspended_at FROM users WHERE id = $1", uuid.UUID(author.user_id)
    )
    assert rows[0]["suspended_at"] is not None
    assert not {public, friends} & await feed_ids(client, reader)
    # Their token is refused at once (the session enforcement, told after the commit), their own reads included.
    refused = await client.get("/me", headers=author.auth)
    assert (refused.status_code, (await refused.get_json())["error"]) == (403, "account_suspended")
    for story_id in (public, friends):
        assert (await client.get(f"/stories/{story_id}", headers=reader.auth)).status_code == 404
        assert (await client.post(f"/stories/{story_id}/view", headers=reader.auth)).status_code == 404
    clock.advance(1)
    response = await client.post(f"/admin/users/{author.user_id}/unsuspend", headers=mod.auth)
    assert (response.status_code, await response.get_json()) == (200, {"user_id": author.user_id, "suspended": False})
    assert (await client.get("/me", headers=author.auth)).status_code == 200
    clock.advance(1)
    # Back at once for direct reads; in feeds as other users' new stories are (within FEED_CACHE_SECONDS).
    for story_id in (public, friends):
        assert (await client.get(f"/stories/{story_id}", headers=reader.auth)).status_code == 200
    # Idempotent: a second unsuspend changes nothing and is not audited again.
    assert (
        await client.post(f"/admin/users/{author.user_id}/unsuspend", json={"note": "x"}, headers=mod.auth)
    ).status_code == 200
    assert [
        (e["action"], e["target_type"], e["target_id"], e["note"]) for e in await audit(client, mod, {author.user_id})
    ] == [
        ("unsuspend_user", "user", author.user_id, None),
        ("suspend_user", "user", author.user_id, "spam ring"),
    ]
    assert (await client.post(f"/admin/users/{uuid.uuid4()}/unsuspend", headers=mod.auth)).status_code == 404
    assert (await client.post("/admin/users/nope/unsuspend", headers=mod.auth)).status_code == 404


async def test_a_moderator_cannot_decide_about_themself_or_their_stories(client, app_deps, clock):
    mod = await moderator(client, app_deps, clock)
    other_mod = await moderator(client, app_deps, clock)
    ada = await signup(client)
    story_id = await post_story(client, mod)
    story_entry = await report(client, ada, f"/stories/{story_id}/report")
    user_entry = await report(client, ada, f"/users/{mod.user_id}/report")
    for entry_id in (story_entry, user_entry):
        for action in ("dismiss", "suspend_user"):
            status, error = await resolve(client, mod, entry_id, action)
            assert (status, error["error"]) == (409, "own_case")
    response = await client.post(f"/admin/users/{mod.user_id}/unsuspend", headers=mod.auth)
    assert (response.status_code, (await response.get_json())["error"]) == (409, "own_case")
    # Another moderator can.
    assert (await resolve(client, other_mod, story_entry, "dismiss"))[0] == 200


async def test_audit_is_newest_first_paged_and_outlives_retention(client, app_deps, clock):
    mod = await moderator(client, app_deps, clock)
    reporter = await signup(client)
    authors = [await signup(client) for _ in range(3)]
    story_ids = [await post_story(client, author) for author in authors]
    for story_id in story_ids:
        clock.advance(1)
        entry_id = await report(client, reporter, f"/stories/{story_id}/report")
        assert (await resolve(client, mod, entry_id, "remove_story"))[0] == 200
    walked = await walk_pages(client, mod, "/admin/audit", "entries", 2)
    assert [e["target_id"] for e in walked if e["target_id"] in story_ids] == list(reversed(story_ids))
    # Retention deletes the removed stories for good, with their reports; the audit log stays whole.
    purged = await app_deps.store.purge_stories(clock.now() + timedelta(days=30), 10_000)
    assert purged >= 3
    assert await entries(client, mod, set(story_ids), "resolved") == []
    assert [e["target_id"] for e in await audit(client, mod, set(story_ids))] == list(reversed(story_ids))


async def test_grants_and_revokes_are_audited_without_an_actor(client, app_deps, clock):
    mod = await moderator(client, app_deps, clock)
    clock.advance(1)
    assert await app_deps.store.set_moderator(mod.email, False, clock.now()) is True
    clock.advance(1)
    await app_deps.store.set_moderator(mod.email, True, clock.now())
    assert [(e["actor_id"], e["action"], e["target_id"]) for e in await audit(client, mod, {mod.user_id})] == [
        (None, "grant_moderator", mod.user_id),
        (None, "revoke_moderator", mod.user_id),
        (None, "grant_moderator", mod.user_id),
    ]


async def test_moderation_metrics(client, app_deps, clock, metrics):
    mod = await moderator(client, app_deps, clock)
    ada, bob, cy = await signup(client), await signup(client), await signup(client)
    backlog = ReportBacklog(app_deps.store, clock, metrics)

    async def open_reports():
        await backlog.sample()
        return metrics.registry.get_sample_value("moderation_open_reports")

    before = await open_reports()
    first = await report(client, ada, f"/users/{bob.user_id}/report")
    await report(client, ada, f"/users/{cy.user_id}/report")
    assert await open_reports() == before + 2
    await resolve(client, mod, first, "suspend_user")
    await resolve(client, mod, first, "suspend_user")  # a repeat is no new action
    await client.post(f"/admin/users/{bob.user_id}/unsuspend", headers=mod.auth)
    assert await open_reports() == before + 1
    text = (await (await client.get("/metrics")).get_data()).decode()
    assert 'moderation_actions_total{action="suspend_user"} 1.0' in text
    assert 'moderation_actions_total{action="unsuspend_user"} 1.0' in text
    assert "moderation_open_reports " in text
    assert "moderation_oldest_open_report_age_seconds " in text


class FixedBacklog:
    def __init__(self, backlog):
        self.backlog = backlog

    async def report_backlog(self):
        return self.backlog


async def test_the_oldest_open_reports_age_is_zero_when_none_is_open(clock, metrics):
    backlog = ReportBacklog(FixedBacklog(Backlog(3, clock.now() - timedelta(minutes=90))), clock, metrics)
    await backlog.sample()
    assert metrics.registry.get_sample_value("moderation_open_reports") == 3
    assert metrics.registry.get_sample_value("moderation_oldest_open_report_age_seconds") == 5400
    backlog.store = FixedBacklog(Backlog(0, None))
    await backlog.sample()
    assert metrics.registry.get_sample_value("moderation_open_reports") == 0
    assert metrics.registry.get_sample_value("moderation_oldest_open_report_age_seconds") == 0


@pytest.mark.redis
async def test_reports_and_decisions_through_one_process_apply_to_the_next_read_on_another(
    app_deps, metrics, redis_link, clock
):
    """Two processes (two apps with their own page caches), one database, one Redis: what a report or a decision
    through A hides is gone from the very next read through B, whatever B has cached."""
    a, b = two_processes(app_deps, redis_link, metrics)
    mod = await moderator(a, app_deps, clock)
    author, reader, first, second = [await signup(a) for _ in range(4)]
    reported, held, removed, other = [await post_story(a, author) for _ in range(4)]
    for account in (reader, first, second):
        assert {reported, held, removed, other} <= await feed_ids(b, account)  # cached in B
    # The reporter's own report: gone from their next read on B, no one else's.
    await report(a, first, f"/stories/{reported}/report")
    assert reported not in await feed_ids(b, first)
    assert reported in await feed_ids(b, reader)
    # The threshold (2 here) holds the story for every cached page.
    await report(a, first, f"/stories/{held}/report")
    await report(a, second, f"/stories/{held}/report")
    assert held not in await feed_ids(b, reader)
    # A removal, then a suspension.
    entry_id = await report(a, second, f"/stories/{removed}/report")
    assert (await resolve(a, mod, entry_id, "remove_story"))[0] == 200
    assert removed not in await feed_ids(b, reader)
    assert other in await feed_ids(b, reader)
    entry_id = await report(a, second, f"/users/{author.user_id}/report")
    assert (await resolve(a, mod, entry_id, "suspend_user"))[0] == 200
    assert not {reported, held, removed, other} & await feed_ids(b, reader)
    assert metrics.registry.get_sample_value("feed_cache_requests_total", {"result": "bypass"}) is None
