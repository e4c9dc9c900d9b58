"""POST /upload/presigned and stories with media against a real SeaweedFS: the whole path a client takes, what the
store refuses, who may use a key, and what happens when the store is down or not configured."""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from stories.api import create_app
from stories.clock import FixedClock, SystemClock
from stories.errors import Unauthorized
from stories.media.storage import UPLOAD_URL_SECONDS, open_object_storage
from stories.settings import DEFAULT_MAX_UPLOAD_BYTES
from stories.store.models import IdempotencyClaim
from stories.store.uploads import Uploads
from tests.conftest import START
from tests.fixtures.storage import MEDIA_URL_SECONDS
from tests.helpers import PASSWORD, Account, signup

JPEG = b"\xff\xd8\xff\xe0" + os.urandom(2048) + b"\xff\xd9"


async def presign(client: Any, account: Account, **body: Any) -> Any:
    return await client.post("/upload/presigned", json=body, headers=account.auth)


async def issued(client: Any, account: Account, content_type: str = "image/jpeg", size: int = len(JPEG)) -> dict:
    response = await presign(client, account, content_type=content_type, size=size, file_name="me.jpg")
    assert response.status_code == 200, await response.get_data()
    return dict(await response.get_json())


async def put(http: Any, ticket: dict, body: bytes = JPEG, content_type: str | None = None) -> Any:
    headers = {"Content-Type": content_type or ticket["headers"]["Content-Type"]}
    return await http.put(ticket["upload_url"], content=body, headers=headers)


async def post_story(client: Any, account: Account, media_key: str, **extra: Any) -> Any:
    return await client.post(
        "/stories", json={"media_key": media_key, "visibility": "public", **extra}, headers=account.auth
    )


async def error_code(response: Any, status: int) -> str:
    body = await response.get_json()
    assert response.status_code == status, body
    assert set(body) <= {"error", "message", "fields"}
    return str(body["error"])


# --- the whole path -----------------------------------------------------------------------------------------


@contextmanager
def signing_later(storage_link: Any, *, minutes: int) -> Iterator[None]:
    """The object store signs URLs `minutes` from now inside the block (the API's clock is the test's)."""
    signing = storage_link.storage.clock
    storage_link.storage.clock = FixedClock(SystemClock().now() + timedelta(minutes=minutes))
    try:
        yield
    finally:
        storage_link.storage.clock = signing


async def test_presign_put_story_and_get_the_same_bytes(media_client, http, alice, bob):
    ticket = await issued(media_client, alice)
    assert ticket["method"] == "PUT"
    assert ticket["headers"] == {"Content-Type": "image/jpeg"}
    assert ticket["expires_in"] == UPLOAD_URL_SECONDS == 900
    assert re.fullmatch(rf"uploads/{alice.user_id}/[0-9a-f]{{32}}\.jpg", ticket["media_key"])
    query = parse_qs(urlsplit(ticket["upload_url"]).query)
    assert query["X-Amz-SignedHeaders"] == ["content-length;content-type;host"]
    assert query["X-Amz-Expires"] == ["900"]

    uploaded = await put(http, ticket)
    assert uploaded.status_code == 200, uploaded.text

    created = await post_story(media_client, alice, ticket["media_key"], text="look")
    assert created.status_code == 201, await created.get_data()
    story = await created.get_json()
    assert story["media_key"] == ticket["media_key"]
    fetched = await http.get(story["media_url"])
    assert fetched.status_code == 200
    assert fetched.content == JPEG

    # Everyone who may see the story gets a URL that works, from every read.
    read = await (await media_client.get(f"/stories/{story['id']}", headers=bob.auth)).get_json()
    feed = await (await media_client.get("/feed", headers=bob.auth)).get_json()
    cached = await (await media_client.get("/feed", headers=bob.auth)).get_json()
    for url in (read["media_url"], feed["stories"][0]["media_url"], cached["stories"][0]["media_url"]):
        assert (await http.get(url)).content == JPEG
    assert parse_qs(urlsplit(read["media_url"]).query)["X-Amz-SignedHeaders"] == ["host"]


async def test_the_extension_comes_from_the_type_never_from_the_file_name(media_client, alice):
    response = await presign(media_client, alice, content_type="Video/QuickTime", size=10, file_name="clip.exe")
    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["media_key"].endswith(".mov")
    assert body["headers"] == {"Content-Type": "video/quicktime"}


async def test_the_media_url_is_stable_within_a_minute_and_ends_with_the_story(media_client, media_app, http, alice):
    ticket = await issued(media_client, alice)
    assert (await put(http, ticket)).status_code == 200
    story = await (await post_story(media_client, alice, ticket["media_key"])).get_json()
    again = await (await media_client.get(f"/stories/{story['id']}", headers=alice.auth)).get_json()
    # Same URL on both reads (unless a minute boundary fell between them): clients can cache the image.
    first, second = (parse_qs(urlsplit(u).query) for u in (story["media_url"], again["media_url"]))
    if first["X-Amz-Date"] == second["X-Amz-Date"]:
        assert story["media_url"] == again["media_url"]
    # Valid MEDIA_URL_SECONDS from its window's start, never longer (tests/media/test_media_url.py has the rule).
    assert int(first["X-Amz-Expires"][0]) == MEDIA_URL_SECONDS


async def test_a_story_close_to_its_expiry_gets_a_url_that_ends_with_it(app_deps, storage_link, http, alice):
    settings = dataclasses.replace(app_deps.settings, story_ttl_seconds=120)
    client = create_app(dataclasses.replace(app_deps, settings=settings, media=storage_link)).test_client()
    ticket = await issued(client, alice)
    assert (await put(http, ticket)).status_code == 200
    story = await (await post_story(client, alice, ticket["media_key"])).get_json()
    assert int(parse_qs(urlsplit(story["media_url"]).query)["X-Amz-Expires"][0]) <= 180


# --- what the store refuses ---------------------------------------------------------------------------------


async def test_the_store_refuses_another_type(media_client, http, alice):
    ticket = await issued(media_client, alice)
    assert (await put(http, ticket, content_type="image/png")).status_code == 403


@pytest.mark.parametrize("body", [JPEG + b"!", JPEG[:-1]], ids=["longer", "shorter"])
async def test_the_store_refuses_another_size(media_client, http, alice, body):
    ticket = await issued(media_client, alice)
    assert (await put(http, ticket, body=body)).status_code == 403


async def test_presigned_urls_name_the_public_endpoint(storage_config, http):
    """The service reaches the store at one address (a container network's name, say) and clients at another:
    URLs are signed for the host the client sends, and the service's own calls keep the inner address."""
    port = urlsplit(storage_config.endpoint).port
    config = dataclasses.replace(storage_config, public_endpoint=f"http://localhost:{port}")
    key = f"uploads/{uuid.uuid4()}/public.jpg"
    async with open_object_storage(config) as storage:
        url = storage.presign_put(key, "image/jpeg", len(JPEG))
        assert url.startswith(f"http://localhost:{port}/")
        response = await http.put(url, content=JPEG, headers={"Content-Type": "image/jpeg"})
        assert response.status_code == 200, response.text
        assert await storage.object_exists(key)  # through storage_config.endpoint, 127.0.0.1
        media_url = storage.media_url(key, MEDIA_URL_SECONDS, timedelta(hours=1))
        assert media_url.startswith(f"http://localhost:{port}/")
        assert (await http.get(media_url)).content == JPEG


async def test_the_store_refuses_an_expired_url(storage_config, http):
    # Signed by the real clock's past: the store checks signatures against its own clock.
    past = FixedClock(SystemClock().now() - timedelta(seconds=UPLOAD_URL_SECONDS + 60))
    async with open_object_storage(storage_config, past) as storage:
        url = storage.presign_put(f"uploads/{uuid.uuid4()}/old.jpg", "image/jpeg", len(JPEG))
    response = await http.put(url, content=JPEG, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 403
    assert "expired" in response.text.lower()


@pytest.mark.parametrize("part", ["X-Amz-Signature", "X-Amz-Credential", "path"])
async def test_the_store_refuses_a_tampered_url(media_client, http, alice, part):
    ticket = await issued(media_client, alice)
    url = ticket["upload_url"]
    if part == "X-Amz-Signature":
        signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
        url = url.replace(signature, signature[::-1])
    elif part == "X-Amz-Credential":
        url = url.replace("%2Fus-east-1%2F", "%2Feu-west-1%2F").replace("X-Amz-Credential=", "X-Amz-Credential=x")
    else:
        url = url.replace(".jpg?", "x.jpg?")
    assert (await put(http, {**ticket, "upload_url": url})).status_code == 403


# --- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"size": 10}, "content_type"),
        ({"content_type": "image/svg+xml", "size": 10}, "content_type"),
        ({"content_type": "image/jpeg; charset=x", "size": 10}, "content_type"),
        ({"content_type": 5, "size": 10}, "content_type"),
        ({"content_type": "image/jpeg"}, "size"),
        ({"content_type": "image/jpeg", "size": 0}, "size"),
        ({"content_type": "image/jpeg", "size": -1}, "size"),
        ({"content_type": "image/jpeg", "size": DEFAULT_MAX_UPLOAD_BYTES + 1}, "size"),
        ({"content_type": "image/jpeg", "size": 1.5}, "size"),
        ({"content_type": "image/jpeg", "size": "10"}, "size"),
        ({"content_type": "image/jpeg", "size": True}, "size"),
        ({"content_type": "image/jpeg", "size": 10, "file_name": "../etc/passwd"}, "file_name"),
        ({"content_type": "image/jpeg", "size": 10, "file_name": "a\\b.jpg"}, "file_name"),
        ({"content_type": "image/jpeg", "size": 10, "file_name": "a\nb.jpg"}, "file_name"),
        ({"content_type": "image/jpeg", "size": 10, "file_name": ""}, "file_name"),
        ({"content_type": "image/jpeg", "size": 10, "file_name": "x" * 256}, "file_name"),
        ({"content_type": "image/jpeg", "size": 10, "file_name": 7}, "file_name"),
    ],
)
async def test_invalid_presign_requests(media_client, alice, body, field):
    response = await media_client.post("/upload/presigned", json=body, headers=alice.auth)
    error = await response.get_json()
    assert response.status_code == 400, error
    assert (error["error"], list(error["fields"])) == ("invalid_request", [field])


async def test_the_largest_upload_is_allowed(media_client, alice):
    response = await presign(media_client, alice, content_type="video/mp4", size=DEFAULT_MAX_UPLOAD_BYTES)
    assert response.status_code == 200


async def test_presign_needs_a_token(media_client):
    response = await media_client.post("/upload/presigned", json={"content_type": "image/jpeg", "size": 1})
    assert response.status_code == 401


# --- who may use a key --------------------------------------------------------------------------------------


async def test_a_key_is_single_use(media_client, http, alice):
    ticket = await issued(media_client, alice)
    assert (await put(http, ticket)).status_code == 200
    assert (await post_story(media_client, alice, ticket["media_key"])).status_code == 201
    again = await post_story(media_client, alice, ticket["media_key"])
    assert await error_code(again, 400) == "invalid_request"


async def test_someone_elses_key_is_refused(media_client, http, alice, bob):
    ticket = await issued(media_client, alice)
    assert (await put(http, ticket)).status_code == 200
    stolen = await post_story(media_client, bob, ticket["media_key"])
    assert await error_code(stolen, 400) == "invalid_request"
    # A key of the caller's namespace that was never issued is refused too.
    made_up = await post_story(media_client, alice, f"uploads/{alice.user_id}/{uuid.uuid4().hex}.jpg")
    assert await error_code(made_up, 400) == "invalid_request"
    # Alice's key is still hers to use.
    assert (await post_story(media_client, alice, ticket["media_key"])).status_code == 201


async def test_a_key_older_than_a_day_is_refused(media_client, http, clock, alice):
    ticket = await issued(media_client, alice)
    assert (await put(http, ticket)).status_code == 200
    clock.advance(timedelta(hours=24).total_seconds())
    login = await media_client.post("/login", json={"email": alice.email, "password": PASSWORD})
    alice = dataclasses.replace(alice, token=(await login.get_json())["token"])
    late = await post_story(media_client, alice, ticket["media_key"])
    assert await error_code(late, 400) == "invalid_request"


async def test_media_not_uploaded_then_uploaded(media_client, http, alice):
    ticket = await issued(media_client, alice)
    early = await post_story(media_client, alice, ticket["media_key"], text="soon")
    assert await error_code(early, 400) == "media_not_uploaded"
    # Nothing was written: once the file is there, the same key works.
    assert (await put(http, ticket)).status_code == 200
    assert (await post_story(media_client, alice, ticket["media_key"])).status_code == 201


async def test_an_idempotent_retry_replays_the_story_with_its_media(media_client, http, alice):
    ticket = await issued(media_client, alice)
    assert (await put(http, ticket)).status_code == 200
    body = {"media_key": ticket["media_key"], "visibility": "public"}
    headers = {**alice.auth, "Idempotency-Key": "upload-1"}
    first = await media_client.post("/stories", json=body, headers=headers)
    second = await media_client.post("/stories", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 201)
    assert (await first.get_json())["id"] == (await second.get_json())["id"]


async def test_an_upload_url_used_again_after_the_story_does_not_change_what_readers_get(
    media_client, http, alice, bob
):
    # Readers got the upload's own key: a second PUT with the same URL (within its 15 minutes) swapped the bytes.
    ticket = await issued(media_client, alice)
    assert (await put(http, ticket)).status_code == 200
    created = await post_story(media_client, alice, ticket["media_key"])
    assert created.status_code == 201
    story = await created.get_json()
    assert story["media_key"] == ticket["media_key"]
    other = b"\xff\xd8\xff\xe0" + os.urandom(len(JPEG) - 6) + b"\xff\xd9"
    assert (await put(http, ticket, other)).status_code == 200
    read = await (await media_client.get(f"/stories/{story['id']}", headers=bob.auth)).get_json()
    fetched = await http.get(read["media_url"])
    assert fetched.status_code == 200
    assert fetched.content == JPEG


# --- storage down, storage off ------------------------------------------------------------------------------


async def test_storage_down(app_deps, dead_link, media_client, http, alice):
    # A key issued while the store was up, its file uploaded; then the store goes away.
    ticket = await issued(media_client, alice)
    assert (await put(http, ticket)).status_code == 200
    assert await dead_link.probe() == "down"
    client = create_app(dataclasses.replace(app_deps, media=dead_link)).test_client()

    refused = await presign(client, alice, content_type="image/jpeg", size=10)
    assert await error_code(refused, 503) == "storage_unavailable"
    # Everything else works; a story with media is created without asking the store.
    created = await post_story(client, alice, ticket["media_key"])
    assert created.status_code == 201, await created.get_data()
    health = await (await client.get("/healthz")).get_json()
    assert health == {"status": "degraded", "checks": {"db": "ok", "redis": "disabled", "storage": "down"}}


async def test_a_store_that_stops_answering_between_probes_still_lets_stories_in(app_deps, dead_link, alice):
    """The last probe said ok; the object check fails: the story is created all the same."""
    dead_link.status = "ok"
    client = create_app(dataclasses.replace(app_deps, media=dead_link)).test_client()
    ticket_key = f"uploads/{alice.user_id}/{uuid.uuid4().hex}.jpg"
    await Uploads(app_deps.store.database).issue(
        ticket_key, uuid.UUID(alice.user_id), "image/jpeg", 10, app_deps.clock.now()
    )
    assert (await post_story(client, alice, ticket_key)).status_code == 201


async def test_storage_not_configured(client):
    carol = await signup(client)
    refused = await presign(client, carol, content_type="image/jpeg", size=10)
    assert await error_code(refused, 503) == "storage_unavailable"
    health = await (await client.get("/healthz")).get_json()
    assert health["checks"]["storage"] == "disabled"
    assert health["status"] == "ok"


async def test_healthz_reports_storage_ok(media_client):
    health = await (await media_client.get("/healthz")).get_json()
    assert health["checks"]["storage"] == "ok"


async def test_a_replayed_story_carries_a_fresh_media_url(media_client, storage_link, http, alice):
    # The stored response was replayed as it was: its media_url could have expired for up to 24 h.
    ticket = await issued(media_client, alice)
    assert (await put(http, ticket)).status_code == 200
    body = {"media_key": ticket["media_key"], "visibility": "public"}
    headers = {**alice.auth, "Idempotency-Key": "with-media"}
    first = await (await media_client.post("/stories", json=body, headers=headers)).get_json()
    # Twenty minutes on (on the store's clock too: it signs with the real one), the first URL has expired.
    with signing_later(storage_link, minutes=20):
        replay = await media_client.post("/stories", json=body, headers=headers)
    assert replay.status_code == 201
    again = await replay.get_json()
    assert {k: v for k, v in again.items() if k != "media_url"} == {k: v for k, v in first.items() if k != "media_url"}
    dates = [parse_qs(urlsplit(story["media_url"]).query)["X-Amz-Date"][0] for story in (first, again)]
    assert dates[0] < dates[1]


async def test_a_retried_presign_replays_its_key_with_a_fresh_upload_url(media_client, storage_link, http, alice):
    # Idempotency-Key was honoured on POST /stories only: a retried presign issued a second key.
    body = {"content_type": "image/jpeg", "size": len(JPEG), "file_name": "me.jpg"}
    headers = {**alice.auth, "Idempotency-Key": "presign-1"}
    first = await media_client.post("/upload/presigned", json=body, headers=headers)
    assert first.status_code == 200
    ticket = await first.get_json()
    # Twenty minutes on (the store's clock too), the first upload URL has expired; the replay's has not.
    with signing_later(storage_link, minutes=20):
        replay = await media_client.post("/upload/presigned", json=body, headers=headers)
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replay"] == "true"
    again = await replay.get_json()
    assert again["media_key"] == ticket["media_key"]
    dates = [parse_qs(urlsplit(t["upload_url"]).query)["X-Amz-Date"][0] for t in (ticket, again)]
    assert dates[0] < dates[1]
    # Another body with that key: a reuse.
    reused = await media_client.post("/upload/presigned", json={**body, "size": 10}, headers=headers)
    assert await error_code(reused, 422) == "idempotency_key_reused"
    # Once a story uses the key, no new upload URL is given for it: its bytes must not change.
    assert (await put(http, ticket)).status_code == 200
    assert (await post_story(media_client, alice, ticket["media_key"])).status_code == 201
    used = await media_client.post("/upload/presigned", json=body, headers=headers)
    assert await error_code(used, 409) == "upload_used"


async def test_an_idempotent_presign_for_a_user_deleted_meanwhile_is_a_401(store):
    # A token passes the auth hook until the deletion reaches this process's memory (0.5 s at most); the store
    # is the net. The idempotent presign's key claim names the user, so its foreign key caught the deletion as an
    # unhandled error (a 500); it is the 401 of every other write now, and nothing is issued.
    gone = uuid.uuid4()
    claim: IdempotencyClaim[bytes] = IdempotencyClaim("retry-1", b"hash", lambda response: response)
    with pytest.raises(Unauthorized):
        await Uploads(store.database).issue_once("uploads/gone.jpg", gone, "image/jpeg", 10, START, claim, b"{}")
