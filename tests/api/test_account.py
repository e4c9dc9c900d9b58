"""DELETE /me (API.md "Your account and your data"): the password, the erasure read back from every table, what
other users see afterwards, and a deletion racing the user's own writes."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg
import pytest
import trio

from stories.store.locks import pair_lock
from tests.api.test_sessions import closed_code, serve_app
from tests.helpers import PASSWORD, Account, open_ws, post_story, refused_ws, signup
from tests.leftovers import leftovers
from tests.sql import SqlConnection, connect_sql, fetch

if TYPE_CHECKING:
    from stories.store.bridge import Bridge

WRONG = PASSWORD + "!"
TEN_YEARS = 10 * 365 * 86_400


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, jwt_ttl_seconds=TEN_YEARS, rate_limit_reactions_per_minute=1_000_000)


async def delete_me(client: Any, account: Account, password: str = PASSWORD) -> Any:
    return await client.delete("/me", json={"password": password}, headers=account.auth)


async def story_json(client: Any, account: Account, story_id: str) -> dict[str, Any]:
    response = await client.get(f"/stories/{story_id}", headers=account.auth)
    assert response.status_code == 200, await response.get_data()
    return dict(await response.get_json())


async def test_a_wrong_password_is_403_and_counts_with_failed_logins(client):
    ada = await signup(client)
    response = await delete_me(client, ada, WRONG)
    assert response.status_code == 403
    assert (await response.get_json())["error"] == "wrong_password"
    for _ in range(8):
        assert (await delete_me(client, ada, WRONG)).status_code == 403
    failed_login = await client.post("/login", json={"email": ada.email, "password": WRONG})
    assert failed_login.status_code == 401  # the 10th failure of this email
    for attempt in (delete_me(client, ada), client.post("/login", json={"email": ada.email, "password": PASSWORD})):
        throttled = await attempt
        assert throttled.status_code == 429
        assert int(throttled.headers["Retry-After"]) >= 1
    assert (await client.get("/me", headers=ada.auth)).status_code == 200  # nothing was deleted


async def test_a_body_without_a_password_is_400(client):
    ada = await signup(client)
    response = await client.delete("/me", json={}, headers=ada.auth)
    assert response.status_code == 400
    assert (await client.get("/me", headers=ada.auth)).status_code == 200


async def moderate(client: Any, moderator: Account, report_id: str, action: str) -> None:
    response = await client.post(f"/admin/reports/{report_id}/resolve", json={"action": action}, headers=moderator.auth)
    assert response.status_code == 200, await response.get_data()


async def report(client: Any, reporter: Account, path: str) -> str:
    response = await client.post(path, json={"reason": "spam"}, headers=reporter.auth)
    assert response.status_code == 201, await response.get_data()
    report_id: str = (await response.get_json())["report_id"]
    return report_id


async def test_nothing_of_the_user_is_left_in_any_table(client, database_url, counters, app_deps, clock):
    ada, bob, cy = await signup(client, display_name="Ada"), await signup(client), await signup(client)
    # Everything a user can leave: stories with an audience, views, reactions (on their own and on others'
    # stories), follows both ways, blocks and mutes both ways, audience entries on others' stories, an
    # idempotency key.
    await client.post(f"/follow/{bob.user_id}", headers=ada.auth)
    await client.post(f"/follow/{ada.user_id}", headers=bob.auth)
    await client.post(f"/follow/{ada.user_id}", headers=cy.auth)
    own = await client.post(
        "/stories",
        json={"text": "for bob", "visibility": "friends", "audience_user_ids": [bob.user_id]},
        headers={**ada.auth, "Idempotency-Key": "ada-1"},
    )
    assert own.status_code == 201
    own_id = (await own.get_json())["id"]
    public = await post_story(client, ada, text="hello")
    await client.post(f"/stories/{own_id}/view", headers=bob.auth)
    await client.post(f"/stories/{public}/reactions", json={"emoji": "🔥"}, headers=cy.auth)
    bobs = await client.post(
        "/stories",
        json={"text": "for ada", "visibility": "friends", "audience_user_ids": [ada.user_id, cy.user_id]},
        headers=bob.auth,
    )
    bobs_id = (await bobs.get_json())["id"]
    await client.post(f"/stories/{bobs_id}/view", headers=ada.auth)
    await client.post(f"/stories/{bobs_id}/reactions", json={"emoji": "❤️"}, headers=ada.auth)
    await client.post(f"/blocks/{cy.user_id}", headers=ada.auth)
    await client.post(f"/mutes/{bob.user_id}", headers=ada.auth)
    await client.post(f"/mutes/{ada.user_id}", headers=cy.auth)
    # Reports and moderation: Bob reports Ada's story, Cy (a moderator) suspends her for it and lifts the
    # suspension; Ada reports Bob; Ada, a moderator too, dismisses a report of Bob's about Cy.
    for moderator in (ada, cy):
        assert await app_deps.store.set_moderator(moderator.email, True, clock.now())
    await moderate(client, cy, await report(client, bob, f"/stories/{public}/report"), "suspend_user")
    unsuspended = await client.post(f"/admin/users/{ada.user_id}/unsuspend", json={}, headers=cy.auth)
    assert unsuspended.status_code == 200
    await report(client, ada, f"/users/{bob.user_id}/report")
    await moderate(client, ada, await report(client, bob, f"/users/{cy.user_id}/report"), "dismiss")
    await counters.flush()
    assert await leftovers(database_url, ada.user_id, ada.email)  # the scan does see the user before
    audit_entries = len(await fetch(database_url, "SELECT id FROM moderation_audit"))

    response = await delete_me(client, ada)
    assert (response.status_code, await response.get_data()) == (204, b"")

    assert await leftovers(database_url, ada.user_id, ada.email) == {}
    # The report she filed stays, anonymous; the decisions stay in the audit log, unlinked from her.
    # Left: her report of Bob without its reporter, and Bob's report of Cy; Bob's report of her story went with it.
    reports = await fetch(database_url, "SELECT reporter_id, user_id FROM reports")
    assert sorted((str(r["reporter_id"]), str(r["user_id"])) for r in reports) == sorted(
        [("None", bob.user_id), (bob.user_id, cy.user_id)]
    )
    assert len(await fetch(database_url, "SELECT id FROM moderation_audit")) == audit_entries
    # The others' own rows are intact.
    assert (await client.get(f"/stories/{bobs_id}", headers=bob.auth)).status_code == 200
    assert (await client.get("/me", headers=bob.auth)).status_code == 200


async def test_tokens_answer_401_at_once_and_the_email_signs_up_again(client):
    ada = await signup(client)
    await post_story(client, ada)
    assert (await client.get("/me", headers=ada.auth)).status_code == 200  # the user is now known to this process
    assert (await delete_me(client, ada)).status_code == 204

    for method, path in (("GET", "/me"), ("GET", "/feed"), ("GET", "/me/stats"), ("DELETE", "/me")):
        response = await client.open(path, method=method, headers=ada.auth, json={"password": PASSWORD})
        assert response.status_code == 401, (method, path)
    created = await client.post("/stories", json={"text": "x", "visibility": "public"}, headers=ada.auth)
    assert created.status_code == 401
    login = await client.post("/login", json={"email": ada.email, "password": PASSWORD})
    assert login.status_code == 401

    again = await signup(client, email=ada.email)
    assert again.user_id != ada.user_id
    assert (await client.get("/me", headers=again.auth)).status_code == 200


async def test_other_users_counters_stats_and_viewers_stop_counting_the_user(client, counters):
    ada, bob, cy = await signup(client), await signup(client), await signup(client)
    story = await post_story(client, bob)
    for viewer in (ada, cy):
        await client.post(f"/stories/{story}/view", headers=viewer.auth)
    for reactor, emoji in ((ada, "🔥"), (ada, "😂"), (cy, "🔥")):
        await client.post(f"/stories/{story}/reactions", json={"emoji": emoji}, headers=reactor.auth)
    await counters.flush()
    before = await story_json(client, bob, story)
    assert (before["view_count"], before["reaction_count"]) == (2, 3)

    assert (await delete_me(client, ada)).status_code == 204

    after = await story_json(client, bob, story)  # no flush: the deletion set them in its transaction
    assert (after["view_count"], after["reaction_count"]) == (1, 1)
    stats = await (await client.get("/me/stats", headers=bob.auth)).get_json()
    assert stats == {"posted": 1, "views": 1, "unique_viewers": 1, "reactions": {"🔥": 1}}
    viewers = await (await client.get(f"/stories/{story}/viewers", headers=bob.auth)).get_json()
    assert [v["user_id"] for v in viewers["viewers"]] == [cy.user_id]


async def test_cached_feeds_and_trays_stop_serving_the_users_stories(client):
    ada, bob = await signup(client), await signup(client)
    await client.post(f"/follow/{ada.user_id}", headers=bob.auth)
    stories = {await post_story(client, ada), await post_story(client, ada, "friends")}

    async def feed() -> set[str]:
        response = await client.get("/feed", headers=bob.auth)
        return {s["id"] for s in (await response.get_json())["stories"]}

    async def tray() -> set[str]:
        response = await client.get("/tray", headers=bob.auth)
        return {s["id"] for author in (await response.get_json())["authors"] for s in author["stories"]}

    for _ in range(2):  # the second read is served from the caches
        assert stories <= await feed()
        assert stories <= await tray()
    assert (await delete_me(client, ada)).status_code == 204
    assert not stories & await feed()
    assert not stories & await tray()


# --- a deletion racing the user's own writes ---------------------------------------------------------------


class Side:
    """A connection of its own, in a transaction, holding locks that stall the app's statements where the test
    wants them."""

    def __init__(self, connection: SqlConnection) -> None:
        self.connection = connection
        self.open = True

    @classmethod
    async def begin(cls, bridge: Bridge, database_url: str) -> Side:
        side = cls(await connect_sql(bridge, database_url))
        await side.run("BEGIN")
        return side

    async def run(self, statement: str, *args: Any) -> Any:
        return await self.connection.fetchval(statement, *args)

    async def release(self) -> None:
        if self.open:
            self.open = False
            await self.run("ROLLBACK")  # nothing to undo once committed: a warning, no error
            await self.connection.close()


async def waiting_for_locks(side: Side, at_least: int) -> None:
    """Until at least this many backends wait for a lock (the app's statements, stalled)."""
    with trio.fail_after(30):
        # Polled: nothing tells another connection when a backend starts waiting.
        while await side.run("SELECT count(*) FROM pg_locks WHERE NOT granted") < at_least:  # noqa: ASYNC110
            await trio.sleep(0.01)


async def test_a_deletion_racing_the_users_own_writes_leaves_nothing(client, bridge, database_url):
    ada, bob = await signup(client), await signup(client)
    bobs_story = await post_story(client, bob)
    # Stall three writes of Ada's half way: her reaction on Bob's story (its foreign key check waits for the
    # story row) and her follow of Bob (it waits for the pair's lock) have not written yet; her story with Bob in
    # its audience has (it holds her user row, as every insert naming her does) and waits for Bob's row.
    story_row = await Side.begin(bridge, database_url)
    await story_row.run("SELECT 1 FROM stories WHERE id = $1 FOR UPDATE", UUID(bobs_story))
    pair = await Side.begin(bridge, database_url)
    await pair.run("SELECT pg_advisory_xact_lock($1)", pair_lock(UUID(ada.user_id), UUID(bob.user_id)))
    bobs_row = await Side.begin(bridge, database_url)
    await bobs_row.run("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", UUID(bob.user_id))
    observer = await Side.begin(bridge, database_url)
    answers: dict[str, int] = {}
    deleted = trio.Event()

    async def call(name: str, method: str, path: str, body: dict[str, Any]) -> None:
        answers[name] = (await client.open(path, method=method, json=body, headers=ada.auth)).status_code
        if name == "delete":
            deleted.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "reaction", "POST", f"/stories/{bobs_story}/reactions", {"emoji": "🔥"})
            nursery.start_soon(call, "follow", "POST", f"/follow/{bob.user_id}", {})
            story = {"text": "in flight", "visibility": "friends", "audience_user_ids": [bob.user_id]}
            nursery.start_soon(call, "story", "POST", "/stories", story)
            await waiting_for_locks(observer, 3)
            nursery.start_soon(call, "delete", "DELETE", "/me", {"password": PASSWORD})
            await waiting_for_locks(observer, 4)  # the deletion waits for the story's transaction
            await bobs_row.release()  # the story commits, then the deletion runs and erases it
            with trio.fail_after(30):
                await deleted.wait()
            await story_row.release()  # the reaction and the follow go on after the deletion committed
            await pair.release()
    finally:
        for side in (story_row, pair, bobs_row, observer):
            await side.release()

    assert answers == {"story": 201, "delete": 204, "reaction": 401, "follow": 401}
    assert await leftovers(database_url, ada.user_id, ada.email) == {}
    bobs = await story_json(client, bob, bobs_story)
    assert (bobs["view_count"], bobs["reaction_count"]) == (0, 0)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/follow/{ada}", {}, 404),
        ("/blocks/{ada}", {}, 404),
        ("/mutes/{ada}", {}, 404),
        ("/stories", {"text": "for ada", "visibility": "friends", "audience_user_ids": ["{ada}"]}, 400),
        ("/stories/{story}/view", {}, 404),
        ("/stories/{story}/reactions", {"emoji": "🔥"}, 404),
    ],
)
async def test_another_users_write_racing_the_deletion_answers_as_for_an_unknown_target(
    client, bridge, database_url, path, body, status
):
    """Bob follows, blocks or mutes Ada, puts her in an audience, views or reacts to her story, while her account
    is being deleted: the write read its target before the deletion committed, and its foreign key check fails
    after. That is a 404 (the audience's 400), as for a target that never existed; it was a 500."""
    ada, bob = await signup(client), await signup(client)
    adas_story = await post_story(client, ada)

    def filled(value: Any) -> Any:
        if isinstance(value, str):
            return value.format(ada=ada.user_id, story=adas_story)
        if isinstance(value, list):
            return [filled(item) for item in value]
        return {key: filled(item) for key, item in value.items()} if isinstance(value, dict) else value

    deletion = await Side.begin(bridge, database_url)  # the deletion, as DELETE /me runs it: her row locked first
    await deletion.run("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", UUID(ada.user_id))
    await deletion.run("SELECT 1 FROM stories WHERE author_id = $1 FOR UPDATE", UUID(ada.user_id))
    observer = await Side.begin(bridge, database_url)
    answer: list[int] = []

    async def write() -> None:
        answer.append((await client.post(filled(path), json=filled(body), headers=bob.auth)).status_code)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await waiting_for_locks(observer, 1)
            await deletion.run("DELETE FROM users WHERE id = $1", UUID(ada.user_id))
            await deletion.run("COMMIT")
    finally:
        await deletion.release()
        await observer.release()

    assert answer == [status]
    assert await leftovers(database_url, ada.user_id, ada.email) == {}


async def test_the_users_open_sockets_close_1008(app, client, nursery, live_access):
    port = await serve_app(app, nursery)
    ada = await signup(client)
    with trio.fail_after(10):
        async with open_ws(port, f"/ws?token={ada.token}") as socket:
            assert (await delete_me(client, ada)).status_code == 204
            assert await closed_code(socket) == 1008
        rejected = await refused_ws(port, f"/ws?token={ada.token}")
    assert rejected.status_code == 401


async def test_a_deletion_aborted_by_a_deadlock_runs_again(client, bridge, database_url):
    """The deletion locks Ada's row, then the stories she viewed (to recount them). Another transaction that holds
    one of those stories and then wants Ada's row closes a cycle: PostgreSQL aborts the deletion, which must run
    again, not answer 500.

    PostgreSQL aborts the transaction whose deadlock check runs first, each `deadlock_timeout` (1 s) after it
    began to wait: the deletion, unless the machine stalls for that long between the two waits; then the test's
    transaction is the victim, and the scenario runs again with new users (a few tries at most)."""
    for _ in range(DEADLOCK_TRIES):
        if await _deletion_was_the_victim(client, bridge, database_url):
            return
    pytest.fail(f"the deletion was never the deadlock's victim in {DEADLOCK_TRIES} tries")


DEADLOCK_TRIES = 5


async def _deletion_was_the_victim(client, bridge, database_url) -> bool:
    ada, bob = await signup(client), await signup(client)
    story = await post_story(client, bob)
    await client.post(f"/stories/{story}/view", headers=ada.auth)
    other = await Side.begin(bridge, database_url)
    await other.run("SELECT 1 FROM stories WHERE id = $1 FOR UPDATE", UUID(story))
    observer = await Side.begin(bridge, database_url)
    answer: list[int] = []
    victim = False

    async def delete() -> None:
        answer.append((await delete_me(client, ada)).status_code)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(delete)
            await waiting_for_locks(observer, 1)
            # Waits for the deletion, which waits for this transaction: after deadlock_timeout PostgreSQL aborts
            # one of the two.
            try:
                await other.run("SELECT 1 FROM users WHERE id = $1 FOR KEY SHARE", UUID(ada.user_id))
                victim = True  # granted: the deletion was aborted and rolled back, and waits to run again
            except asyncpg.DeadlockDetectedError:
                pass
            await other.release()  # the deletion's second run (or its only one) goes through
    finally:
        await other.release()
        await observer.release()

    assert answer == [204]
    assert await leftovers(database_url, ada.user_id, ada.email) == {}
    return victim


async def test_a_suspended_user_can_neither_delete_nor_export_the_account(client, app_deps, database_url):
    ada = await signup(client)
    await fetch(database_url, "UPDATE users SET suspended_at = now() WHERE id = $1", UUID(ada.user_id))
    app_deps.access.account_changed(UUID(ada.user_id))
    for response in (await delete_me(client, ada), await client.get("/me/export", headers=ada.auth)):
        assert response.status_code == 403
        assert (await response.get_json())["error"] == "account_suspended"
    assert await leftovers(database_url, ada.user_id, ada.email)  # nothing was deleted
