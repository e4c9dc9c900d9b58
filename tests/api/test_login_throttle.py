"""Failed logins are throttled per email (API.md, Auth): after 10 failures within 15 minutes, 429 with Retry-After.

The window's timing (spread failures, Retry-After counting down) is tested on trio's MockClock in
tests/actors/test_ratelimit.py; these tests use the real database, so no autojump clock here.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import bcrypt
import trio
import trio.testing

import stories.security as security_module
from stories.actors.ratelimit import BucketKeeper
from stories.api import create_app
from stories.security import PasswordHasher
from tests.helpers import PASSWORD, signup

WRONG = PASSWORD + "!"
LIMIT = 10
WINDOW_SECONDS = 900


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


async def login(client: Any, email: str, password: str) -> Any:
    return await client.post("/login", json={"email": email, "password": password})


async def fail(client: Any, email: str, times: int) -> None:
    for n in range(times):
        response = await login(client, email, WRONG)
        assert response.status_code == 401, (n, await response.get_data())


async def assert_throttled(response: Any) -> None:
    assert response.status_code == 429, await response.get_data()
    body = await response.get_json()
    assert set(body) == {"error", "message"}
    assert body["error"] == "rate_limited"
    # Until the oldest failure leaves the 15-minute window: the failures were a moment ago.
    assert WINDOW_SECONDS - 60 <= int(response.headers["Retry-After"]) <= WINDOW_SECONDS


async def test_ten_failures_then_429_even_with_the_right_password(client, metrics):
    account = await signup(client)
    await fail(client, account.email, LIMIT)
    await assert_throttled(await login(client, account.email, PASSWORD))
    await assert_throttled(await login(client, account.email, WRONG))
    assert 'rate_limited_total{action="login"} 2.0' in metrics.render().decode()
    # Other emails are not affected.
    other = await signup(client)
    assert (await login(client, other.email, PASSWORD)).status_code == 200


async def test_existing_and_unknown_emails_are_throttled_alike(client):
    account = await signup(client)
    answers = []
    for email in (account.email, unique_email("nobody")):
        await fail(client, email, LIMIT)
        response = await login(client, email, PASSWORD)
        headers = {k.lower(): v for k, v in response.headers.items() if k.lower() != "x-request-id"}
        answers.append((response.status_code, await response.get_data(), headers))
    assert answers[0][0] == 429
    assert answers[0] == answers[1]


async def test_the_email_is_counted_trimmed_and_lower_cased_malformed_or_not(client):
    account = await signup(client)
    variants = [account.email, account.email.upper(), f"  {account.email} ", f"\t{account.email.title()}"]
    for n in range(LIMIT):
        assert (await login(client, variants[n % len(variants)], WRONG)).status_code == 401
    await assert_throttled(await login(client, account.email, PASSWORD))

    malformed = f"Not An Email {uuid.uuid4().hex[:6]}"
    for n in range(LIMIT):
        assert (await login(client, malformed if n % 2 else f" {malformed.lower()}  ", WRONG)).status_code == 401
    await assert_throttled(await login(client, malformed.upper(), WRONG))


async def test_successful_logins_are_not_counted(client):
    account = await signup(client)
    for _ in range(2 * LIMIT):
        assert (await login(client, account.email, PASSWORD)).status_code == 200
    await fail(client, account.email, LIMIT - 1)
    assert (await login(client, account.email, PASSWORD)).status_code == 200
    await fail(client, account.email, 1)  # the tenth failure
    await assert_throttled(await login(client, account.email, PASSWORD))


async def test_a_throttled_login_costs_no_bcrypt(client, monkeypatch):
    account, nobody = await signup(client), unique_email("nobody")
    await fail(client, account.email, LIMIT)
    await fail(client, nobody, LIMIT)
    checks: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        checks.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(security_module.bcrypt, "checkpw", checkpw)
    for email in (account.email, nobody):
        await assert_throttled(await login(client, email, PASSWORD))
    assert checks == []


async def test_logins_refused_for_overload_are_not_counted(app_deps, client):
    account = await signup(client)
    hasher = PasswordHasher(4, threads=1, hash_seconds=1.0, queue_seconds=1.0)
    await hasher.prepare()
    busy = create_app(dataclasses.replace(app_deps, passwords=hasher)).test_client()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, hasher.limiter:
            nursery.start_soon(signup, busy)  # waits for the one hashing thread, which the test holds
            while hasher.waiting < 1:
                await trio.testing.wait_all_tasks_blocked()
            for _ in range(LIMIT + 2):
                assert (await login(busy, account.email, WRONG)).status_code == 503
    await fail(busy, account.email, LIMIT)
    await assert_throttled(await login(busy, account.email, PASSWORD))


async def test_the_count_is_shared_between_processes_through_redis(app_deps, redis_link):
    """Two processes are two apps with their own keepers on one Redis: the failures add up."""
    first, second = (
        create_app(
            dataclasses.replace(app_deps, limiter=BucketKeeper.from_settings(app_deps.settings, redis_link))
        ).test_client()
        for _ in range(2)
    )
    account = await signup(first)
    for n in range(LIMIT):
        assert (await login(first if n % 2 else second, account.email, WRONG)).status_code == 401
    await assert_throttled(await login(first, account.email, PASSWORD))
    await assert_throttled(await login(second, account.email, PASSWORD))
    # Neither the address nor its unbounded raw form is a Redis key: a fixed-size digest is.
    keys = [key.decode() async for key in redis_link.client.scan_iter(match=f"{redis_link.key_prefix}rl:login:*")]
    assert len(keys) == 1
    assert account.email not in keys[0]
    assert len(keys[0].rpartition(":")[2]) == 64
