"""API.md "Sessions" (under Auth): refresh tokens that rotate, reuse detection, logout, the sessions list, revoking
one, a password change; revoked sessions and suspended or deleted users refused on every route and the WebSocket.
(Across processes: tests/test_two_processes.py.)"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from functools import partial
from typing import Any

import asyncpg
import orjson
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from trio_websocket import ConnectionClosed

from tests.helpers import PASSWORD, Account, open_ws, refused_ws, signup

WAIT = 10.0
PROTECTED = "/me"


async def aio_execute(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    async with pool.acquire() as conn:
        await conn.execute(sql, *args)


async def aio_fetch(pool: asyncpg.Pool, sql: str, *args: object) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(sql, *args)


async def execute(app_deps: Any, sql: str, *args: object) -> None:
    await app_deps.store.database.call(aio_execute, sql, *args)


async def fetch(app_deps: Any, sql: str, *args: object) -> list[asyncpg.Record]:
    return await app_deps.store.database.call(aio_fetch, sql, *args)


async def login(client: Any, account: Account, password: str = PASSWORD, **headers: str) -> Any:
    return await client.post("/login", json={"email": account.email, "password": password}, headers=headers)


async def refresh(client: Any, refresh_token: Any) -> Any:
    return await client.post("/token/refresh", json={"refresh_token": refresh_token})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def status_and_error(client: Any, token: str, path: str = PROTECTED) -> tuple[int, str | None]:
    response = await client.get(path, headers=bearer(token))
    body = await response.get_json()
    return response.status_code, body.get("error") if response.status_code >= 400 else None


# --- signup, login, refresh ---------------------------------------------------------------------------------


async def test_signup_and_login_return_a_refresh_token_stored_only_as_a_hash(client, app_deps):
    account = await signup(client)
    response = await login(client, account)
    body = await response.get_json()
    assert body["expires_in"] == app_deps.settings.jwt_ttl_seconds
    for token in (account.refresh_token, body["refresh_token"]):
        assert len(token) >= 43  # 256 bits, URL-safe base64
    assert account.refresh_token != body["refresh_token"]
    rows = await fetch(
        app_deps,
        """SELECT t.token_hash FROM session_tokens t JOIN sessions s ON s.id = t.session_id
           WHERE s.user_id = $1""",
        uuid.UUID(account.user_id),
    )
    stored = {bytes(row["token_hash"]) for row in rows}
    assert stored == {hashlib.sha256(t.encode()).digest() for t in (account.refresh_token, body["refresh_token"])}
    everything = str([dict(r) for r in await fetch(app_deps, "SELECT * FROM sessions")])
    assert account.refresh_token not in everything


async def test_refresh_rotates_and_a_reused_token_revokes_the_whole_session(client):
    account = await signup(client)
    first = await refresh(client, account.refresh_token)
    assert first.status_code == 200
    body = await first.get_json()
    assert set(body) == {"token", "user_id", "email", "refresh_token", "expires_in"}
    assert (body["user_id"], body["email"]) == (account.user_id, account.email)
    assert body["refresh_token"] != account.refresh_token
    assert await status_and_error(client, body["token"]) == (200, None)
    second = await refresh(client, body["refresh_token"])
    assert second.status_code == 200
    newest = await second.get_json()

    # The first refresh token again: a stolen token was used. The session is revoked, every token of it refused.
    reused = await refresh(client, account.refresh_token)
    assert reused.status_code == 401
    assert (await reused.get_json())["error"] == "session_revoked"
    for token in (account.token, body["token"], newest["token"]):
        assert await status_and_error(client, token) == (401, "session_revoked")
    again = await refresh(client, newest["refresh_token"])
    assert (again.status_code, (await again.get_json())["error"]) == (401, "session_revoked")
    # Other sessions of the user are untouched.
    other = await (await login(client, account)).get_json()
    assert await status_and_error(client, other["token"]) == (200, None)


async def test_unknown_and_expired_refresh_tokens_are_401_invalid_refresh_token(client, clock, app_deps):
    for unknown in ("not-a-token", "x" * 43, "x" * 5000):
        response = await refresh(client, unknown)
        assert (response.status_code, (await response.get_json())["error"]) == (401, "invalid_refresh_token")
    for wrong in (None, 7, ["x"], {"refresh_token": "x"}):
        response = await refresh(client, wrong)
        assert (response.status_code, (await response.get_json())["error"]) == (400, "invalid_request")

    days = app_deps.settings.refresh_token_days
    account = await signup(client)
    # A refresh restarts the lifetime: just short of it, it works; the new one lives `days` from now.
    clock.advance(days * 86_400 - 1)
    response = await refresh(client, account.refresh_token)
    assert response.status_code == 200
    renewed = (await response.get_json())["refresh_token"]
    clock.advance(days * 86_400)
    response = await refresh(client, renewed)
    assert (response.status_code, (await response.get_json())["error"]) == (401, "invalid_refresh_token")


@pytest.mark.parametrize("attempt", range(20))
async def test_two_concurrent_refreshes_with_one_token_exactly_one_succeeds(client, attempt):
    account = await signup(client)
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await refresh(client, account.refresh_token)).status_code)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            nursery.start_soon(one)
    assert sorted(statuses) == [200, 401], attempt


# --- logout, the sessions list, revoking one ------------------------------------------------------------------


async def test_logout_revokes_the_callers_session_only(client):
    account = await signup(client)
    other = await (await login(client, account)).get_json()
    response = await client.post("/logout", headers=account.auth)
    assert response.status_code == 204
    assert await status_and_error(client, account.token) == (401, "session_revoked")
    response = await refresh(client, account.refresh_token)
    assert (response.status_code, (await response.get_json())["error"]) == (401, "session_revoked")
    assert (await client.post("/logout", headers=account.auth)).status_code == 401
    assert await status_and_error(client, other["token"]) == (200, None)


async def test_sessions_list_is_the_active_ones_most_recently_used_first(client, clock):
    account = await signup(client)
    clock.advance(60)
    phone = await (await login(client, account, **{"User-Agent": "Stories/1.0 (iPhone)"})).get_json()
    clock.advance(60)
    laptop = await (await login(client, account, **{"User-Agent": "x" * 1000})).get_json()
    await client.post("/logout", headers=bearer(laptop["token"]))
    clock.advance(60)
    assert (await refresh(client, account.refresh_token)).status_code == 200  # the signup session, used last

    response = await client.get("/me/sessions", headers=bearer(phone["token"]))
    assert response.status_code == 200
    sessions = (await response.get_json())["sessions"]
    assert [s["current"] for s in sessions] == [False, True]
    assert sessions[1]["user_agent"] == "Stories/1.0 (iPhone)"
    assert sessions[0]["last_used_at"] > sessions[1]["last_used_at"]
    assert sessions[0]["created_at"] < sessions[1]["created_at"]
    assert set(sessions[0]) == {"session_id", "created_at", "last_used_at", "user_agent", "current"}


async def test_delete_a_session_is_idempotent_and_404_for_anyone_elses(client):
    account, stranger = await signup(client), await signup(client)
    second = await (await login(client, account)).get_json()
    listed = (await (await client.get("/me/sessions", headers=account.auth)).get_json())["sessions"]
    target = next(s["session_id"] for s in listed if not s["current"])
    assert (await client.delete(f"/me/sessions/{target}", headers=stranger.auth)).status_code == 404
    assert await status_and_error(client, second["token"]) == (200, None)
    for _ in range(2):
        assert (await client.delete(f"/me/sessions/{target}", headers=account.auth)).status_code == 204
    assert await status_and_error(client, second["token"]) == (401, "session_revoked")
    for unknown in (str(uuid.uuid4()), "not-a-uuid"):
        assert (await client.delete(f"/me/sessions/{unknown}", headers=account.auth)).status_code == 404
    assert await status_and_error(client, account.token) == (200, None)


# --- the password change --------------------------------------------------------------------------------------


async def test_password_change_revokes_every_other_session(client):
    account = await signup(client)
    other = await (await login(client, account)).get_json()
    response = await client.post(
        "/me/password", json={"current_password": PASSWORD, "new_password": "a new password"}, headers=account.auth
    )
    assert response.status_code == 204
    assert await status_and_error(client, account.token) == (200, None)
    assert await status_and_error(client, other["token"]) == (401, "session_revoked")
    assert (await login(client, account)).status_code == 401
    assert (await login(client, account, "a new password")).status_code == 200


async def test_a_wrong_current_password_is_403_and_throttled_like_logins(client):
    account = await signup(client)
    body = {"current_password": "not my password", "new_password": "a new password"}
    for _ in range(10):
        response = await client.post("/me/password", json=body, headers=account.auth)
        assert (response.status_code, (await response.get_json())["error"]) == (403, "wrong_password")
    response = await client.post("/me/password", json=body, headers=account.auth)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    # The same budget as the logins of this email.
    assert (await login(client, account)).status_code == 429
    short = {"current_password": PASSWORD, "new_password": "short"}
    assert (await client.post("/me/password", json=short, headers=account.auth)).status_code == 400


# --- suspension and deletion, written by other code --------------------------------------------------------------


async def test_suspension_refuses_tokens_logins_and_refreshes_until_cleared(client, app_deps):
    account = await signup(client)
    user_id = uuid.UUID(account.user_id)
    assert await status_and_error(client, account.token) == (200, None)
    await execute(app_deps, "UPDATE users SET suspended_at = now() WHERE id = $1", user_id)
    app_deps.access.account_changed(user_id)
    for path in (PROTECTED, "/feed", "/me/sessions"):
        assert await status_and_error(client, account.token, path) == (403, "account_suspended")
    response = await login(client, account)
    assert (response.status_code, (await response.get_json())["error"]) == (403, "account_suspended")
    assert (await login(client, account, "a wrong password")).status_code == 401  # reveals nothing
    response = await refresh(client, account.refresh_token)
    assert (response.status_code, (await response.get_json())["error"]) == (403, "account_suspended")

    await execute(app_deps, "UPDATE users SET suspended_at = NULL WHERE id = $1", user_id)
    app_deps.access.account_changed(user_id)
    assert await status_and_error(client, account.token) == (200, None)
    assert (await refresh(client, account.refresh_token)).status_code == 200  # a refused refresh used nothing
    assert (await login(client, account)).status_code == 200


async def test_a_change_nobody_announced_is_read_from_the_log_within_the_poll(client, app_deps, live_access):
    suspended, deleted, revoked = await signup(client), await signup(client), await signup(client)
    for account in (suspended, deleted, revoked):
        assert await status_and_error(client, account.token) == (200, None)
    await execute(app_deps, "UPDATE users SET suspended_at = now() WHERE id = $1", uuid.UUID(suspended.user_id))
    await execute(app_deps, "DELETE FROM users WHERE id = $1", uuid.UUID(deleted.user_id))
    await execute(app_deps, "UPDATE sessions SET revoked_at = now() WHERE user_id = $1", uuid.UUID(revoked.user_id))
    assert live_access.poll_seconds <= 1.0
    with trio.fail_after(WAIT):
        await live_access.wait_read()
        await live_access.wait_read()  # one whole read that began after the commits
    assert await status_and_error(client, suspended.token) == (403, "account_suspended")
    assert await status_and_error(client, deleted.token) == (401, "session_revoked")
    assert await status_and_error(client, revoked.token) == (401, "session_revoked")
    assert (await signup(client, deleted.email)).email == deleted.email


async def test_a_deleted_user_is_refused_at_once_when_announced(client, app_deps):
    account = await signup(client)
    assert await status_and_error(client, account.token) == (200, None)
    await execute(app_deps, "DELETE FROM users WHERE id = $1", uuid.UUID(account.user_id))
    app_deps.access.account_changed(uuid.UUID(account.user_id))
    status, _error = await status_and_error(client, account.token)
    assert status == 401
    assert not await fetch(app_deps, "SELECT 1 FROM access_changes WHERE user_id = $1", uuid.UUID(account.user_id))


async def test_a_starting_process_loads_the_sessions_revoked_earlier(client, app_deps):
    account = await signup(client)
    await execute(app_deps, "UPDATE sessions SET revoked_at = now() WHERE user_id = $1", uuid.UUID(account.user_id))
    await app_deps.access.load()
    assert await status_and_error(client, account.token) == (401, "session_revoked")


# --- the WebSocket ------------------------------------------------------------------------------------------------


async def serve_app(app: Any, nursery: trio.Nursery) -> int:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds = await nursery.start(partial(serve, app, config, shutdown_trigger=trio.sleep_forever))
    return int(binds[0].rsplit(":", 1)[1])


async def closed_code(socket: Any) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        await socket.get_message()
    assert closed.value.reason is not None
    return int(closed.value.reason.code)


async def test_a_revoked_sessions_socket_closes_1008_and_its_upgrade_is_refused(app, client, app_deps, nursery):
    port = await serve_app(app, nursery)
    account = await signup(client)
    other = await (await login(client, account)).get_json()
    with trio.fail_after(WAIT):
        async with (
            open_ws(port, f"/ws?token={account.token}") as socket,
            open_ws(port, f"/ws?token={other['token']}") as kept,
        ):
            assert (await client.post("/logout", headers=account.auth)).status_code == 204
            assert await closed_code(socket) == 1008
            assert not kept.closed
        rejected = await refused_ws(port, f"/ws?token={account.token}")
    assert rejected.status_code == 401
    assert orjson.loads(rejected.body)["error"] == "session_revoked"


async def test_a_suspended_users_sockets_close_1008_and_upgrades_are_403(app, client, app_deps, nursery, live_access):
    port = await serve_app(app, nursery)
    account = await signup(client)
    user_id = uuid.UUID(account.user_id)
    with trio.fail_after(WAIT):
        async with open_ws(port, f"/ws?token={account.token}") as socket:
            await execute(app_deps, "UPDATE users SET suspended_at = now() WHERE id = $1", user_id)
            app_deps.access.account_changed(user_id)
            assert await closed_code(socket) == 1008
        rejected = await refused_ws(port, f"/ws?token={account.token}")
    assert rejected.status_code == 403
    assert orjson.loads(rejected.body)["error"] == "account_suspended"


async def test_refresh_tokens_expire_with_the_setting(client, clock, app_deps):
    account = await signup(client)
    clock.advance(timedelta(days=app_deps.settings.refresh_token_days).total_seconds())
    response = await refresh(client, account.refresh_token)
    assert (response.status_code, (await response.get_json())["error"]) == (401, "invalid_refresh_token")


async def test_sessions_that_can_never_be_used_again_are_dropped(client, clock, app_deps):
    revoked, idle, active = await signup(client), await signup(client), await signup(client)
    await client.post("/logout", headers=revoked.auth)
    clock.advance(app_deps.settings.refresh_token_days * 86_400 - 10)
    assert (await refresh(client, active.refresh_token)).status_code == 200
    clock.advance(20)
    await app_deps.access.prune()
    users = [uuid.UUID(account.user_id) for account in (revoked, idle, active)]
    rows = await fetch(app_deps, "SELECT user_id FROM sessions WHERE user_id = ANY($1::uuid[])", users)
    assert [row["user_id"] for row in rows] == [users[2]]
    assert (await refresh(client, idle.refresh_token)).status_code == 401
