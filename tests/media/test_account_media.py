"""A deleted account's media (API.md "Your account and your data"): every object of the user leaves the store in
the expiry worker's next run, through the media sweeper; and an upload URL asked for while the account is being
deleted leaves no record behind."""

from __future__ import annotations

from uuid import UUID

import pytest
import trio

from stories.actors.expiry import ExpiryTicker
from stories.media.storage import UPLOAD_URL_SECONDS
from stories.media.sweeper import MediaSweeper
from stories.store.uploads import Uploads
from tests.helpers import PASSWORD, signup
from tests.leftovers import leftovers
from tests.media.test_sweeper import JPEG, deleted, story_with_media, upload
from tests.sql import connect_sql


@pytest.fixture
def ticker(store, clock, metrics, storage_link) -> ExpiryTicker:
    sweeper = MediaSweeper(Uploads(store.database), storage_link.storage, metrics, retry_seconds=60)
    return ExpiryTicker(store, clock, metrics, interval=60, media=sweeper)


async def test_the_users_objects_go_in_the_next_run_and_then_every_trace(
    media_client, http, storage_link, ticker, clock, metrics, database_url
):
    ada = await signup(media_client)
    _, used = await story_with_media(media_client, http, ada)
    unused = (await upload(media_client, http, ada))["media_key"]
    never_uploaded = (
        await (
            await media_client.post(
                "/upload/presigned", json={"content_type": "image/png", "size": 10}, headers=ada.auth
            )
        ).get_json()
    )["media_key"]

    response = await media_client.delete("/me", json={"password": PASSWORD}, headers=ada.auth)
    assert response.status_code == 204
    # Only the sweeper's queue still names the user, by the object keys it must delete; no user id column.
    left = await leftovers(database_url, ada.user_id, ada.email)
    assert list(left) == ["public.media_uploads"]
    assert len(left["public.media_uploads"]) == 3

    await ticker.run_once()
    for key in (used, unused, never_uploaded):
        assert not await storage_link.storage.object_exists(key)
    assert deleted(metrics, "account_deleted") == 3

    # As for every key, the record stays while its upload URL could still put the file back, then goes.
    clock.advance(UPLOAD_URL_SECONDS)
    await ticker.run_once()
    assert await leftovers(database_url, ada.user_id, ada.email) == {}
    assert deleted(metrics, "account_deleted") == 3


async def test_an_upload_url_asked_for_during_the_deletion_is_refused_and_leaves_nothing(
    media_client, bridge, database_url, storage_link
):
    ada = await signup(media_client)
    # A deletion in progress, as DELETE /me runs it: the user row locked, then deleted.
    connection = await connect_sql(bridge, database_url)
    run = connection.fetchval

    answer: list[int] = []

    async def presign() -> None:
        response = await media_client.post(
            "/upload/presigned", json={"content_type": "image/jpeg", "size": len(JPEG)}, headers=ada.auth
        )
        answer.append(response.status_code)

    try:
        await run("BEGIN")
        await run("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", UUID(ada.user_id))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(presign)
            with trio.fail_after(30):
                # Polled: nothing tells another connection when a backend starts waiting.
                while await run("SELECT count(*) FROM pg_locks WHERE NOT granted") < 1:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            await run("DELETE FROM users WHERE id = $1", UUID(ada.user_id))
            await run("COMMIT")
    finally:
        await connection.close()

    assert answer == [401]
    assert await leftovers(database_url, ada.user_id, ada.email) == {}
