"""The media lifecycle against a real SeaweedFS: the expiry worker deletes the object of an expired, deleted or
purged story within one run, and an unused key's object 24 h after issue; a store that is down delays it without
losing track of any object. Time is the service's FixedClock (the store's signatures use the real one)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from stories.actors.expiry import ExpiryTicker
from stories.api import create_app
from stories.domain import story_object_key
from stories.media.storage import UPLOAD_URL_SECONDS
from stories.media.sweeper import MediaSweeper
from stories.store import locks
from stories.store.uploads import Uploads
from tests.fixtures.redis import capture_all_logs
from tests.helpers import signup
from tests.sql import sql_connection

JPEG = b"\xff\xd8\xff" + bytes(range(256)) * 4 + b"\xff\xd9"
DAY = 86_400


async def sql(database_url: str, statement: str, *args: Any) -> Any:
    async with sql_connection(database_url) as connection:
        return await connection.fetchval(statement, *args)


async def upload(client: Any, http: Any, account: Any) -> dict[str, Any]:
    response = await client.post(
        "/upload/presigned", json={"content_type": "image/jpeg", "size": len(JPEG)}, headers=account.auth
    )
    ticket = dict(await response.get_json())
    put = await http.put(ticket["upload_url"], content=JPEG, headers={"Content-Type": "image/jpeg"})
    assert put.status_code == 200, put.text
    return ticket


async def story_with_media(client: Any, http: Any, account: Any) -> tuple[str, str]:
    ticket = await upload(client, http, account)
    created = await client.post(
        "/stories", json={"media_key": ticket["media_key"], "visibility": "public"}, headers=account.auth
    )
    assert created.status_code == 201, await created.get_data()
    return (await created.get_json())["id"], ticket["media_key"]


@pytest.fixture
def sweeper(store, storage_link, metrics) -> MediaSweeper:
    return MediaSweeper(Uploads(store.database), storage_link.storage, metrics, retry_seconds=60)


@pytest.fixture
def ticker(store, clock, metrics, sweeper) -> ExpiryTicker:
    return ExpiryTicker(store, clock, metrics, interval=60, media=sweeper)


def deleted(metrics: Any, reason: str) -> float:
    return metrics.media_objects_deleted.labels(reason=reason)._value.get()


async def test_an_expired_storys_object_goes_in_the_run_that_expires_it(
    media_client, http, storage_link, ticker, clock, metrics, database_url
):
    alice = await signup(media_client)
    _, key = await story_with_media(media_client, http, alice)
    await ticker.run_once()
    assert await storage_link.storage.object_exists(key)  # active: kept

    clock.advance(DAY)
    with capture_all_logs() as logs:
        await ticker.run_once()
    assert not await storage_link.storage.object_exists(key)
    assert deleted(metrics, "story_expired") == 1
    (line,) = [entry for entry in logs if entry["event"] == "media_objects_deleted"]
    assert (line["count"], line["reasons"], line["failed"]) == (1, {"story_expired": 1}, 0)
    # Its upload URL expired long ago: nothing is left to track.
    assert await sql(database_url, "SELECT count(*) FROM media_uploads") == 0


async def test_a_deleted_storys_object_goes_at_once_and_once_more_after_its_upload_url_expires(
    media_client, http, storage_link, sweeper, clock, metrics, database_url
):
    alice = await signup(media_client)
    ticket = await upload(media_client, http, alice)
    created = await media_client.post(
        "/stories", json={"media_key": ticket["media_key"], "visibility": "public"}, headers=alice.auth
    )
    story_id = uuid.UUID((await created.get_json())["id"])
    # The author deletes it (DELETE /stories/{id} is a soft delete, as here).
    await sql(database_url, "UPDATE stories SET deleted_at = $2 WHERE id = $1", story_id, clock.now())

    await sweeper.sweep(clock.now())
    key = ticket["media_key"]
    assert not await storage_link.storage.object_exists(key)
    assert deleted(metrics, "story_deleted") == 1

    # The upload URL is still valid: a client could put the file back. The row waits for that URL to expire...
    put = await http.put(ticket["upload_url"], content=JPEG, headers={"Content-Type": "image/jpeg"})
    assert put.status_code == 200
    clock.advance(UPLOAD_URL_SECONDS - 1)
    await sweeper.sweep(clock.now())
    assert await storage_link.storage.object_exists(key)
    # ... and then deletes the object once more, and forgets it; the object counts once.
    clock.advance(1)
    await sweeper.sweep(clock.now())
    assert not await storage_link.storage.object_exists(key)
    assert await sql(database_url, "SELECT count(*) FROM media_uploads") == 0
    assert deleted(metrics, "story_deleted") == 1


async def test_a_storys_own_copy_goes_with_it(media_client, http, storage_link, sweeper, clock, database_url):
    # Readers get the story's copy of its upload (stories/<id>/...): it is deleted with the upload.
    alice = await signup(media_client)
    story_id, key = await story_with_media(media_client, http, alice)
    copy = story_object_key(uuid.UUID(story_id), key)
    assert await storage_link.storage.object_exists(copy)
    await sweeper.sweep(clock.now())
    assert await storage_link.storage.object_exists(copy)  # active: kept
    assert (await media_client.delete(f"/stories/{story_id}", headers=alice.auth)).status_code == 204
    await sweeper.sweep(clock.now())
    assert not await storage_link.storage.object_exists(copy)
    assert not await storage_link.storage.object_exists(key)


async def test_a_copy_the_store_could_not_make_at_creation_is_made_once_the_upload_url_expires(
    app_deps, dead_link, media_client, http, storage_link, sweeper, clock, database_url
):
    alice = await signup(media_client)
    ticket = await upload(media_client, http, alice)
    assert await dead_link.probe() == "down"
    down = create_app(dataclasses.replace(app_deps, media=dead_link)).test_client()
    created = await down.post(
        "/stories", json={"media_key": ticket["media_key"], "visibility": "public"}, headers=alice.auth
    )
    assert created.status_code == 201, await created.get_data()
    story_id = (await created.get_json())["id"]
    copy = story_object_key(uuid.UUID(story_id), ticket["media_key"])
    # The store is back. Until the copy exists, the media_url readers get answers 404: they never see bytes that
    # could still change.
    read = await (await media_client.get(f"/stories/{story_id}", headers=alice.auth)).get_json()
    assert (await http.get(read["media_url"])).status_code == 404
    # The upload URL is still valid: no copy yet.
    await sweeper.sweep(clock.now())
    assert not await storage_link.storage.object_exists(copy)
    # Once it has expired, the expiry worker's run makes the copy, and readers get the bytes.
    clock.advance(UPLOAD_URL_SECONDS)
    with capture_all_logs() as logs:
        await sweeper.sweep(clock.now())
    assert [entry["count"] for entry in logs if entry["event"] == "media_objects_copied"] == [1]
    assert (await http.get(read["media_url"])).content == JPEG
    assert await sql(database_url, "SELECT count(*) FROM media_uploads WHERE copy_pending") == 0


async def test_a_story_deleted_for_good_releases_its_object(
    media_client, http, storage_link, sweeper, clock, metrics, database_url
):
    alice = await signup(media_client)
    story_id, key = await story_with_media(media_client, http, alice)
    await sql(database_url, "DELETE FROM stories WHERE id = $1", uuid.UUID(story_id))
    await sweeper.sweep(clock.now())
    assert not await storage_link.storage.object_exists(key)
    assert deleted(metrics, "story_deleted") == 1


async def test_an_unused_key_goes_a_day_after_issue(media_client, http, storage_link, sweeper, clock, metrics):
    alice = await signup(media_client)
    key = (await upload(media_client, http, alice))["media_key"]
    clock.advance(DAY - 1)
    assert (await sweeper.sweep(clock.now())).deleted == {}
    assert await storage_link.storage.object_exists(key)
    clock.advance(1)
    result = await sweeper.sweep(clock.now())
    assert result.deleted == {"unused": 1}
    assert not await storage_link.storage.object_exists(key)
    assert deleted(metrics, "unused") == 1


async def test_a_store_that_is_down_delays_the_deletion_and_loses_track_of_nothing(
    media_client, http, store, storage_link, dead_link, clock, metrics, database_url
):
    alice = await signup(media_client)
    keys = [(await upload(media_client, http, alice))["media_key"] for _ in range(3)]
    clock.advance(DAY)
    down = MediaSweeper(Uploads(store.database), dead_link.storage, metrics, retry_seconds=60)
    result = await down.sweep(clock.now())
    assert (result.deleted, result.failed) == ({}, 3)
    assert await sql(database_url, "SELECT count(*) FROM media_uploads") == 3
    # Claimed until the next period: a run before then leaves them alone.
    up = MediaSweeper(Uploads(store.database), storage_link.storage, metrics, retry_seconds=60)
    assert (await up.sweep(clock.now())).deleted == {}
    clock.advance(60)
    assert (await up.sweep(clock.now())).deleted == {"unused": 3}
    for key in keys:
        assert not await storage_link.storage.object_exists(key)
    assert await sql(database_url, "SELECT count(*) FROM media_uploads") == 0


async def test_a_key_being_deleted_can_no_longer_be_taken(media_client, http, store, dead_link, clock, metrics):
    alice = await signup(media_client)
    key = (await upload(media_client, http, alice))["media_key"]
    clock.advance(DAY)
    await MediaSweeper(Uploads(store.database), dead_link.storage, metrics, retry_seconds=60).sweep(clock.now())
    clock.advance(-2)  # a process whose clock lags still thinks the key is young
    login = await media_client.post("/login", json={"email": alice.email, "password": "correct horse battery"})
    token = (await login.get_json())["token"]
    late = await media_client.post(
        "/stories", json={"media_key": key, "visibility": "public"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert late.status_code == 400


async def test_batches_are_bounded_and_a_run_drains_them(media_client, http, store, storage_link, clock, metrics):
    alice = await signup(media_client)
    for _ in range(5):
        await upload(media_client, http, alice)
    clock.advance(DAY)
    claims = []
    uploads = Uploads(store.database)

    class Counting:
        async def claim_due(self, now, limit, retry_at):
            due = await uploads.claim_due(now, limit, retry_at)
            claims.append(len(due or []))
            return due

        async def forget_deleted(self, keys, now, url_seconds):
            return await uploads.forget_deleted(keys, now, url_seconds)

        async def claim_uncopied(self, now, limit, url_seconds):
            return await uploads.claim_uncopied(now, limit, url_seconds)

        async def forget_copied(self, keys):
            await uploads.forget_copied(keys)

    sweeper = MediaSweeper(Counting(), storage_link.storage, metrics, retry_seconds=60, batch_size=2)
    assert (await sweeper.sweep(clock.now())).deleted == {"unused": 5}
    assert claims == [2, 2, 1]


async def test_only_the_expiry_leader_sweeps(media_client, http, sweeper, clock, database_url):
    alice = await signup(media_client)
    await upload(media_client, http, alice)
    clock.advance(DAY)
    async with sql_connection(database_url) as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", locks.EXPIRY_LOCK_ID)
        assert await sweeper.sweep(clock.now()) is None
    assert (await sweeper.sweep(clock.now())).deleted == {"unused": 1}
