"""Framework errors on WebSocket upgrades get API.md's error body too, never a bare 500."""

from functools import partial

import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from tests.helpers import refused_ws


async def test_upgrade_to_an_unknown_path_is_refused_with_the_error_body(app, nursery):
    config = Config()
    config.bind = ["127.0.0.1:0"]
    shutdown = trio.Event()
    binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
    refused = await refused_ws(int(binds[0].rsplit(":", 1)[1]), "/no-such-socket")
    # 400, not 404: quart-cors checks the Origin of every upgrade but /ws's before routing, and a native
    # client sends none. Either way a client gets a clear 4xx with the documented body.
    assert refused.status_code == 400
    assert orjson.loads(refused.body)["error"] == "invalid_request"
    shutdown.set()
