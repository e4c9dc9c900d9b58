"""POST /signup, POST /login and the JWT check every other route goes through (API.md, Auth)."""

from __future__ import annotations

import dataclasses
import uuid
import warnings
from datetime import timedelta
from typing import Any

import bcrypt
import jwt
import pytest
import trio
import trio.testing
from quart import Response

import stories.security as security_module
from stories.api import create_app
from stories.api.deps import current_user_id
from stories.api.json_io import json_response
from stories.errors import Overloaded
from stories.security import PasswordHasher, TokenIssuer
from tests.conftest import TEST_JWT_SECRET
from tests.helpers import PASSWORD, signup

PROTECTED = "/_test/whoami"


@pytest.fixture
def app(app):  # extends the shared fixture with a protected route
    async def whoami() -> Response:
        return json_response({"user_id": str(current_user_id())})

    app.add_url_rule(PROTECTED, "test.whoami", whoami)
    return app


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


async def post(client: Any, path: str, body: Any) -> tuple[int, Any]:
    response = await client.post(path, json=body)
    return response.status_code, await response.get_json()


# --- signup ----------------------------------------------------------------------------------------------


async def test_signup_returns_a_working_token_and_the_normalized_email(client, app_deps, clock):
    local = uuid.uuid4().hex[:10]
    status, body = await post(client, "/signup", {"email": f"  Mixed.{local}@Example.COM \t", "password": PASSWORD})
    assert status == 201
    assert set(body) == {"token", "user_id", "email", "refresh_token", "expires_in"}
    assert body["email"] == f"mixed.{local}@example.com"
    assert body["expires_in"] == app_deps.settings.jwt_ttl_seconds
    user_id = uuid.UUID(body["user_id"])
    verified = TokenIssuer(TEST_JWT_SECRET, app_deps.settings.jwt_ttl_seconds, clock).verify(body["token"])
    assert verified.user_id == user_id

    claims = jwt.decode(body["token"], TEST_JWT_SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert jwt.get_unverified_header(body["token"])["alg"] == "HS256"
    assert claims["sub"] == str(user_id)
    assert claims["sid"] == str(verified.session_id)
    assert claims["iat"] == int(clock.now().timestamp())
    assert claims["exp"] - claims["iat"] == 86_400

    response = await client.get(PROTECTED, headers={"Authorization": f"Bearer {body['token']}"})
    assert response.status_code == 200
    assert await response.get_json() == {"user_id": str(user_id)}


async def test_duplicate_email_after_normalization_is_409(client):
    email = unique_email()
    await signup(client, email)
    status, body = await post(client, "/signup", {"email": f" {email.upper()} ", "password": "another password"})
    assert status == 409
    assert body["error"] == "email_taken"
    assert isinstance(body["message"], str)
    assert body["message"]


INVALID_EMAILS = [
    "",
    "   ",
    "plainaddress",
    "@example.com",
    "user@",
    "user@localhost",
    "user@@example.com",
    "us@er@example.com",
    "user@.example.com",
    "user@example.com.",
    "us er@example.com",
    "user@exa mple.com",
    "a" * 243 + "@example.com",  # 255 characters
]


async def test_signup_refuses_what_is_not_an_email(client):
    for email in INVALID_EMAILS:
        status, body = await post(client, "/signup", {"email": email, "password": PASSWORD})
        assert (status, body["error"], set(body["fields"])) == (400, "invalid_request", {"email"}), email


async def test_longest_allowed_email_is_accepted(client):
    email = "a" * (254 - len("@example.com")) + "@example.com"
    assert len(email) == 254
    status, body = await post(client, "/signup", {"email": email, "password": PASSWORD})
    assert status == 201
    assert body["email"] == email


async def test_password_length_is_counted_in_characters(client):
    for password in ("x" * 7, "x" * 129, "é" * 129, ""):
        status, body = await post(client, "/signup", {"email": unique_email(), "password": password})
        assert (status, body["error"], set(body["fields"])) == (400, "invalid_request", {"password"}), password
    for password in ("x" * 8, "é" * 128):
        status, body = await post(client, "/signup", {"email": unique_email(), "password": password})
        assert status == 201, password


MISTYPED = [
    ({"password": PASSWORD}, "email"),
    ({"email": "a@example.com"}, "password"),
    ({"email": 42, "password": PASSWORD}, "email"),
    ({"email": "a@example.com", "password": ["x" * 10]}, "password"),
    ({"email": "a@example.com", "password": None}, "password"),
]


async def test_missing_or_mistyped_fields_are_named(client):
    for body, field in MISTYPED:
        for path in ("/signup", "/login"):
            status, answer = await post(client, path, body)
            assert (status, answer["error"]) == (400, "invalid_request"), (path, body)
            assert field in answer["fields"], (path, body)


async def test_concurrent_signups_with_one_email_create_one_account(client):
    email = unique_email("race")
    statuses: list[int] = []

    async def attempt(variant: str) -> None:
        response = await client.post("/signup", json={"email": variant, "password": PASSWORD})
        statuses.append(response.status_code)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for variant in [email, email.upper(), f" {email}", email] * 2:
                nursery.start_soon(attempt, variant)
    assert sorted(statuses) == [201] + [409] * 7


# --- login -----------------------------------------------------------------------------------------------


async def test_login_returns_the_same_shape(client):
    account = await signup(client)
    status, body = await post(client, "/login", {"email": account.email.upper(), "password": PASSWORD})
    assert status == 200
    assert set(body) == {"token", "user_id", "email", "refresh_token", "expires_in"}
    assert (body["user_id"], body["email"]) == (account.user_id, account.email)
    response = await client.get(PROTECTED, headers={"Authorization": f"Bearer {body['token']}"})
    assert response.status_code == 200


async def test_wrong_password_and_unknown_email_are_indistinguishable(client):
    account = await signup(client)
    answers = []
    for body in (
        {"email": account.email, "password": PASSWORD + "!"},
        {"email": unique_email("nobody"), "password": PASSWORD},
        {"email": "not an email", "password": PASSWORD},
    ):
        response = await client.post("/login", json=body)
        headers = {k.lower(): v for k, v in response.headers.items() if k.lower() != "x-request-id"}
        answers.append((response.status_code, await response.get_data(), headers))
    assert answers[0][0] == 401
    assert answers[0] == answers[1] == answers[2]
    assert (await (await client.post("/login", json={"email": account.email, "password": "x"})).get_json())[
        "error"
    ] == "invalid_credentials"


async def test_passwords_longer_than_72_bytes_are_fully_significant(client):
    # 100 characters, 200 bytes of UTF-8: bcrypt alone would see only the first 72 bytes.
    password = "é" * 100
    account = await signup(client, password=password)
    status, _ = await post(client, "/login", {"email": account.email, "password": password})
    assert status == 200
    status, body = await post(client, "/login", {"email": account.email, "password": "é" * 99 + "e"})
    assert (status, body["error"]) == (401, "invalid_credentials")


# --- password hashing: bounded, and as slow for unknown emails as for known ones ------------------------


def _cost_of(password_hash: bytes | str) -> int:
    text = password_hash.decode("ascii") if isinstance(password_hash, bytes) else password_hash
    return int(text.split("$")[2])


async def test_prepare_measures_and_builds_the_dummy_at_the_configured_cost():
    hasher = PasswordHasher(5)
    assert not hasher.prepared
    await hasher.prepare()
    assert hasher.prepared
    assert hasher.hash_seconds is not None
    assert hasher.hash_seconds > 0
    assert _cost_of(hasher.dummy_hash) == 5 == _cost_of(await hasher.hash("a password"))
    dummy = hasher.dummy_hash
    await hasher.prepare()  # idempotent: the dummy stays the same
    assert hasher.dummy_hash is dummy


async def test_unknown_emails_cost_one_check_at_full_cost_from_the_first_login(monkeypatch):
    hasher = PasswordHasher(4)
    await hasher.prepare()
    calls: list[tuple[str, int]] = []
    real_hashpw, real_checkpw = bcrypt.hashpw, bcrypt.checkpw

    def hashpw(password: bytes, salt: bytes) -> bytes:
        calls.append(("hashpw", _cost_of(salt)))
        return real_hashpw(password, salt)

    def checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(("checkpw", _cost_of(hashed)))
        return real_checkpw(password, hashed)

    monkeypatch.setattr(security_module.bcrypt, "hashpw", hashpw)
    monkeypatch.setattr(security_module.bcrypt, "checkpw", checkpw)
    real = await hasher.hash("a password")
    calls.clear()
    assert not await hasher.verify("a password", None)  # the first unknown email: no hash made on the spot
    assert await hasher.verify("a password", real)
    assert calls == [("checkpw", 4), ("checkpw", 4)]


def test_hashing_threads_leave_a_core_for_the_event_loop(monkeypatch):
    for cores, threads in ((8, 7), (2, 1), (1, 1), (None, 1)):
        monkeypatch.setattr(security_module.os, "cpu_count", lambda cores=cores: cores)
        hasher = PasswordHasher(4)
        assert hasher.threads == threads
        assert hasher.limiter.total_tokens == threads


def test_the_queue_holds_about_five_seconds_of_work():
    assert PasswordHasher(12, threads=1, hash_seconds=0.25).max_waiting == 20
    assert PasswordHasher(12, threads=3, hash_seconds=0.25).max_waiting == 60
    assert PasswordHasher(12, threads=4, hash_seconds=10.0).max_waiting == 4  # never fewer than the threads


async def test_a_full_hashing_queue_answers_overloaded_at_once():
    hasher = PasswordHasher(4, threads=1, hash_seconds=1.0)
    await hasher.prepare()
    assert hasher.max_waiting == 5
    done: list[str] = []

    async def sign_up(n: int) -> None:
        done.append(await hasher.hash(f"password {n}"))

    with trio.fail_after(30):
        # The limiter is entered after the nursery, so it is released (the thread freed) before the nursery waits.
        async with trio.open_nursery() as nursery, hasher.limiter:  # the one hashing thread is busy
            for n in range(5):
                nursery.start_soon(sign_up, n)
            await trio.testing.wait_all_tasks_blocked()
            assert hasher.waiting == 5
            with pytest.raises(Overloaded) as refused:
                await hasher.hash("one too many")
            assert refused.value.retry_after == 5  # five queued hashes, one thread, 1 s each
            with pytest.raises(Overloaded):
                await hasher.verify("one too many", None)
    assert len(done) == 5
    assert hasher.waiting == 0
    assert await hasher.verify("password 0", None) is False  # room again


async def test_signup_and_login_answer_503_overloaded_when_hashing_is_saturated(app_deps, client):
    account = await signup(client)
    hasher = PasswordHasher(4, threads=1, hash_seconds=1.0, queue_seconds=2.0)
    await hasher.prepare()
    busy = create_app(dataclasses.replace(app_deps, passwords=hasher)).test_client()
    statuses: list[int] = []

    async def waiting_signup() -> None:
        statuses.append((await busy.post("/signup", json={"email": unique_email(), "password": PASSWORD})).status_code)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, hasher.limiter:
            for _ in range(2):
                nursery.start_soon(waiting_signup)
            while hasher.waiting < 2:  # the sign-ups reach the hasher before any database call
                await trio.testing.wait_all_tasks_blocked()
            for path, body in (
                ("/signup", {"email": unique_email(), "password": PASSWORD}),
                ("/login", {"email": account.email, "password": PASSWORD}),
            ):
                response = await busy.post(path, json=body)
                assert response.status_code == 503, path
                assert (await response.get_json())["error"] == "overloaded", path
                assert response.headers["Retry-After"] == "2", path
    assert statuses == [201, 201]


# --- the token check on every other route --------------------------------------------------------------


def forge(claims: dict[str, Any], *, secret: str = TEST_JWT_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def claims_at(clock: Any, user_id: uuid.UUID | None = None, **overrides: Any) -> dict[str, Any]:
    now = int(clock.now().timestamp())
    claims: dict[str, Any] = {
        "sub": str(user_id or uuid.uuid4()),
        "sid": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


async def assert_unauthorized(client: Any, headers: dict[str, str], case: str = "") -> None:
    response = await client.get(PROTECTED, headers=headers)
    assert response.status_code == 401, (case, await response.get_data())
    body = await response.get_json()
    assert set(body) == {"error", "message"}, case
    assert body["error"] == "unauthorized", case
    assert isinstance(body["message"], str), case
    assert body["message"], case
    assert response.headers["WWW-Authenticate"].startswith("Bearer"), case
    assert response.headers["X-Request-ID"], case


async def test_a_valid_forged_token_is_accepted(client, clock):
    # The control case for the failures below: the same forging with nothing wrong passes.
    user_id = uuid.UUID((await signup(client)).user_id)
    response = await client.get(PROTECTED, headers={"Authorization": f"Bearer {forge(claims_at(clock, user_id))}"})
    assert response.status_code == 200
    assert (await response.get_json())["user_id"] == str(user_id)


async def test_a_valid_token_for_a_user_who_does_not_exist_is_401(client, clock):
    await assert_unauthorized(client, {"Authorization": f"Bearer {forge(claims_at(clock, uuid.uuid4()))}"})


async def test_every_token_failure_is_401_with_the_error_body(client, clock):
    claims = claims_at(clock)
    valid = forge(claims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        hs512 = forge(claims, algorithm="HS512")
    unsigned = jwt.encode(claims, None, algorithm="none")
    tampered = valid[:-2] + ("AA" if not valid.endswith("AA") else "BB")
    cases: dict[str, str | None] = {
        "missing header": None,
        "empty header": "",
        "scheme only": "Bearer",
        "empty token": "Bearer ",
        "blank token": "Bearer    ",
        "basic scheme": "Basic dXNlcjpwYXNz",
        "wrong scheme, valid token": f"Token {valid}",
        "token without scheme": valid,
        "garbage": "Bearer garbage",
        "three garbage segments": "Bearer a.b.c",
        "dots": "Bearer ....",
        "no signature segment": "Bearer eyJhbGciOiJIUzI1NiJ9.e30",
        "other secret": f"Bearer {forge(claims, secret='another-secret-0123456789abcdef-0123')}",
        "tampered signature": f"Bearer {tampered}",
        "alg none": f"Bearer {unsigned}",
        "alg none with a signature": f"Bearer {unsigned}signature",
        "HS512": f"Bearer {hs512}",
        "missing sub": f"Bearer {forge(claims_at(clock, sub=None))}",
        "missing exp": f"Bearer {forge(claims_at(clock, exp=None))}",
        "missing iat": f"Bearer {forge(claims_at(clock, iat=None))}",
        # Issued before sessions: nothing could revoke it, so it is refused (the client logs in again).
        "missing sid": f"Bearer {forge(claims_at(clock, sid=None))}",
        "sid not a uuid": f"Bearer {forge(claims_at(clock, sid='not-a-uuid'))}",
        "sub not a uuid": f"Bearer {forge(claims_at(clock, sub='not-a-uuid'))}",
        "empty sub": f"Bearer {forge(claims_at(clock, sub=''))}",
        "numeric sub": f"Bearer {forge(claims_at(clock, sub=12345))}",
        "list sub": f"Bearer {forge(claims_at(clock, sub=['x']))}",
        "string exp": f"Bearer {forge(claims_at(clock, exp='tomorrow'))}",
        "string iat": f"Bearer {forge(claims_at(clock, iat='yesterday'))}",
        "boolean exp": f"Bearer {forge(claims_at(clock, exp=True))}",
        "already expired": f"Bearer {forge(claims_at(clock, exp=int(clock.now().timestamp())))}",
    }
    for case, header in cases.items():
        await assert_unauthorized(client, {} if header is None else {"Authorization": header}, case)


async def test_expired_token_is_401(client, clock, app_deps):
    account = await signup(client)
    assert (await client.get(PROTECTED, headers=account.auth)).status_code == 200
    clock.advance(app_deps.settings.jwt_ttl_seconds - 1)
    assert (await client.get(PROTECTED, headers=account.auth)).status_code == 200
    clock.advance(1)
    await assert_unauthorized(client, account.auth, "expired")


async def test_token_issued_in_the_future_is_401(client, clock):
    now = clock.now()
    later = now + timedelta(minutes=5)
    claims = claims_at(clock, iat=int(later.timestamp()), exp=int((later + timedelta(hours=1)).timestamp()))
    await assert_unauthorized(client, {"Authorization": f"Bearer {forge(claims)}"})
    # A peer's clock a few seconds fast is tolerated.
    slightly = claims_at(clock, uuid.UUID((await signup(client)).user_id), iat=int(now.timestamp()) + 5)
    assert (await client.get(PROTECTED, headers={"Authorization": f"Bearer {forge(slightly)}"})).status_code == 200


async def test_unknown_routes_do_not_need_a_token_to_answer_404(client):
    response = await client.get("/no/such/route")
    assert response.status_code == 404
