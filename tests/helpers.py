"""Small helpers for API tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import trio
from hypercorn.trio import serve
from trio_websocket import ConnectionRejected, WebSocketConnection, wrap_client_stream

from stories.api import create_app
from stories.api.json_shapes import story_fragment
from stories.feed_cache import FeedCache, RedisVersions

PASSWORD = "correct horse battery"


async def serve_hypercorn(app: Any, config: Any, nursery: trio.Nursery) -> int:
    """Serve `app` on a real hypercorn with `config` in `nursery` until the test ends; the port it listens on."""
    shutdown = trio.Event()
    nursery.start_soon(_set_at_teardown, shutdown)
    binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
    return int(binds[0].rsplit(":", 1)[1])


async def _set_at_teardown(shutdown: trio.Event) -> None:
    try:
        await trio.sleep_forever()
    finally:
        shutdown.set()


async def answer_lifespan(receive: Any, send: Any) -> None:
    """Answer an ASGI lifespan scope the way a raw test app served by `serve_hypercorn` needs: started at once, stopped
    when asked."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


@dataclass(frozen=True)
class Account:
    user_id: str
    email: str
    token: str
    refresh_token: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def walk_pages(
    client: Any, account: Account, path: str, key: str, limit: int, max_pages: int = 100
) -> list[dict[str, Any]]:
    """Every entry (`page[key]`) of a paged list, checking the paging contract on the way: a page holds at most
    `limit` entries, and a page with a next_cursor is a full page."""
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(max_pages):
        query = f"{path}?limit={limit}" + ("" if cursor is None else f"&cursor={cursor}")
        response = await client.get(query, headers=account.auth)
        assert response.status_code == 200, await response.get_data()
        page = await response.get_json()
        assert len(page[key]) <= limit
        entries.extend(page[key])
        cursor = page["next_cursor"]
        if cursor is None:
            return entries
        assert len(page[key]) == limit, "a page with a next_cursor is a full page"
    raise AssertionError(f"{path} did not end after {max_pages} pages: {entries}")


async def signup(
    client: Any, email: str | None = None, password: str = PASSWORD, display_name: str | None = None
) -> Account:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": password}
    if display_name is not None:
        body["display_name"] = display_name
    response = await client.post("/signup", json=body)
    assert response.status_code == 201, await response.get_data()
    body = await response.get_json()
    return Account(
        user_id=body["user_id"], email=body["email"], token=body["token"], refresh_token=body["refresh_token"]
    )


async def post_story(client: Any, author: Account, visibility: str = "public", text: str = "hi") -> str:
    """A new text story of `author`; its id."""
    response = await client.post("/stories", json={"text": text, "visibility": visibility}, headers=author.auth)
    assert response.status_code == 201, await response.get_data()
    story_id: str = (await response.get_json())["id"]
    return story_id


@asynccontextmanager
async def open_ws(
    port: int, path: str, headers: list[tuple[str, str]] | None = None, close_seconds: float = 1.0
) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client on 127.0.0.1:`port` over a TCP stream we close ourselves: trio-websocket 0.12
    leaves the stream open when the upgrade is refused or the server closes first (a ResourceWarning, which
    this suite turns into an error)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with trio.open_nursery() as nursery:
            socket = await wrap_client_stream(
                nursery, stream, "127.0.0.1", path, extra_headers=[(k.encode(), v.encode()) for k, v in headers or []]
            )
            yield socket
            with trio.move_on_after(close_seconds, shield=True):
                await socket.aclose()
            nursery.cancel_scope.cancel("client done")
    finally:
        stream.socket.close()


async def refused_ws(port: int, path: str, headers: list[tuple[str, str]] | None = None) -> ConnectionRejected:
    """The rejection of an upgrade that must be refused; fails the test if the upgrade is accepted."""
    try:
        async with open_ws(port, path, headers):
            pass
    except ConnectionRejected as rejected:
        return rejected
    except BaseExceptionGroup as group:
        matched, rest = group.split(ConnectionRejected)
        if matched is None or rest is not None:
            raise
        leaf: BaseException = matched
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        assert isinstance(leaf, ConnectionRejected)
        return leaf
    raise AssertionError("the upgrade was accepted")


def two_processes(app_deps: Any, redis_link: Any, metrics: Any) -> tuple[Any, Any]:
    """Test clients of two apps as two processes would hold them: one database and one Redis, each app with a
    page cache of its own whose graph versions are in that Redis."""

    def client() -> Any:
        feeds = FeedCache(app_deps.store, RedisVersions(redis_link), metrics, 30, present=story_fragment)
        return create_app(replace(app_deps, feeds=feeds)).test_client()

    return client(), client()


class CountingStore:
    """The real store, counting the calls of one of its queries (`query`, e.g. "feed"): what a cache hit saves."""

    def __init__(self, store: Any, query: str) -> None:
        self.store = store
        self.queries = 0
        setattr(self, query, self._counted(getattr(store, query)))

    def _counted(self, method: Any) -> Any:
        async def counted(*args: Any) -> Any:
            self.queries += 1
            return await method(*args)

        return counted


async def post_stories_apart(client: Any, clock: Any, author: Account, count: int, seconds: float) -> list[str]:
    """`count` public stories by `author`, the clock advanced by `seconds` before each: their ids, oldest first."""
    ids = []
    for _ in range(count):
        clock.advance(seconds)
        ids.append(await post_story(client, author))
    return ids


async def authors_a_second_apart(client: Any, clock: Any, count: int) -> tuple[list[Account], dict[str, str]]:
    """`count` new accounts, each posting one public story, the clock advanced a second before each: the
    accounts, and each one's story id by user id."""
    authors = [await signup(client) for _ in range(count)]
    stories = {}
    for author in authors:
        clock.advance(1)
        stories[author.user_id] = await post_story(client, author)
    return authors, stories
