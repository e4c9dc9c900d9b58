"""The real app's /ws (every hook, error handler and CORS layer included), served by hypercorn."""

from functools import partial

import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from trio_websocket import open_websocket_url

from tests.helpers import signup


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
