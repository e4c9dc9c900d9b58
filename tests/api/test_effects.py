"""Post-commit effects (stories/api/effects.py): a write cut off right after its commit still tells the caches."""

from __future__ import annotations

import dataclasses

import trio

from stories.api import create_app
from stories.store import Store
from tests.helpers import post_story, signup


class CutOffAfterCommit(Store):
    """The real store; a block or a delete then waits past the request's deadline, as if the commit's answer
    were delayed (the transaction has committed: the deadline hits the handler right after)."""

    async def block(self, *args):
        blocked = await super().block(*args)
        await trio.sleep_forever()
        return blocked

    async def delete_story(self, *args):
        deleted = await super().delete_story(*args)
        await trio.sleep_forever()
        return deleted


async def feed_ids(client, account):
    response = await client.get("/feed", headers=account.auth)
    assert response.status_code == 200
    return [story["id"] for story in (await response.get_json())["stories"]]


async def test_a_block_or_delete_cut_off_after_its_commit_still_reaches_the_feed_cache(app_deps, store):
    # The feed cache was told after the store returned, outside any shield: a deadline there skipped it, and
    # the blocked author's or the deleted story stayed in cached feeds.
    settings = dataclasses.replace(app_deps.settings, request_timeout_seconds=0.5)
    client = create_app(dataclasses.replace(app_deps, settings=settings)).test_client()
    cut = create_app(
        dataclasses.replace(app_deps, settings=settings, store=CutOffAfterCommit(store.database))
    ).test_client()
    reader, blocked, author = await signup(client), await signup(client), await signup(client)
    blocked_story = await post_story(client, blocked)
    deleted_story = await post_story(client, author)
    with trio.fail_after(10):
        assert {blocked_story, deleted_story} <= set(await feed_ids(client, reader))  # now cached
        response = await cut.post(f"/blocks/{blocked.user_id}", headers=reader.auth)
        assert response.status_code == 503
        assert blocked_story not in await feed_ids(client, reader)
        response = await cut.delete(f"/stories/{deleted_story}", headers=author.auth)
        assert response.status_code == 503
        assert deleted_story not in await feed_ids(client, reader)
