"""The real app's /ws (every hook, error handler and CORS layer included), served by hypercorn."""

import dataclasses
from functools import partial

import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from trio_websocket import open_websocket_url

from stories.api import create_app
from stories.api.authentication import Callers
from stories.store import Store, open_database
from stories.store.events import EventLog
from stories.store.sessions import SessionStore
from tests.helpers import refused_ws, signup
from tests.proxy import open_relay, via


async def test_native_client_without_origin_gets_its_events(app, client, nursery, live_relay):
    author, viewer = await signup(client), await signup(client)
    created = await client.post("/stories", json={"text": "hi", "visibility": "public"}, headers=author.auth)
    story_id = (await created.get_json())["id"]
    config = Config()
    config.bind = ["127.0.0.1:0"]
    shutdown = trio.Event()
    binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
    url = binds[0].replace("http://", "ws://") + f"/ws?token={author.token}"
    with trio.fail_after(10):
        async with open_websocket_url(url) as socket:
            await client.post(f"/stories/{story_id}/view", headers=viewer.auth)
            event = orjson.loads(await socket.get_message())
    assert event["type"] == "story.viewed"
    assert event["payload"]["viewer_id"] == viewer.user_id
    shutdown.set()


async def test_an_upgrade_gets_the_request_deadline_when_the_database_hangs(settings, app_deps, nursery):
    # The upgrade's user lookup waited on a hung database with no deadline at all (HTTP requests have one).
    settings = dataclasses.replace(settings, request_timeout_seconds=1.0)
    async with (
        open_relay(settings.database_url) as relay,
        open_database(via(relay, settings.database_url), data_dir=settings.data_dir, pool_size=2) as database,
    ):
        store = Store(database)
        account = await signup(create_app(dataclasses.replace(app_deps, store=store)).test_client())
        tokens = app_deps.tokens
        app = create_app(
            dataclasses.replace(
                app_deps,
                settings=settings,
                store=store,
                callers=Callers(tokens, SessionStore(database)),
                events=EventLog(database),
            )
        )
        config = Config()
        config.bind = ["127.0.0.1:0"]
        shutdown = trio.Event()
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
        port = int(binds[0].rsplit(":", 1)[1])
        relay.stall()
        try:
            with trio.fail_after(8):
                rejected = await refused_ws(port, f"/ws?token={account.token}")
        finally:
            relay.resume()
            shutdown.set()
        assert rejected.status_code == 503
        assert orjson.loads(rejected.body)["error"] == "overloaded"
