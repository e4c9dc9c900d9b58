"""`stories listen` against a real `stories serve`: a user's events as JSON lines; failures as one line."""

from __future__ import annotations

import io
import os
import sys
from functools import partial

import httpx
import orjson
import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Request

from stories.ws_client import ListenFailed, listen, websocket_target
from tests.processes import SERVICE_VARIABLES, signup, stories_serve, wait_for_connections

WAIT = 30
PING_FRAME = b"\x89\x00"  # FIN + opcode 9 (ping), unmasked, no payload


def listen_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "stories", "listen", *args]


def clean_env(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES and k != "STORIES_TOKEN"}
    return {**base, **env}


async def test_listen_prints_the_authors_events_as_json_lines(database_url, tmp_path):
    async with stories_serve(database_url, tmp_path / "server") as server, httpx.AsyncClient(timeout=10) as http:
        ada = await signup(http, server.base_url, "ada")
        bob = await signup(http, server.base_url, "bob")
        created = await http.post(
            f"{server.base_url}/stories", json={"text": "hi", "visibility": "public"}, headers=ada.auth
        )
        story_id = created.json()["id"]
        # The token from the environment (kept out of `ps`), the URL's port from PORT.
        env = clean_env(STORIES_TOKEN=ada.token, PORT=str(server.port))
        out_path, err_path = tmp_path / "out.jsonl", tmp_path / "err.txt"
        with trio.fail_after(WAIT), out_path.open("wb") as out, err_path.open("wb") as err:
            process = await trio.lowlevel.open_process(
                listen_command("--count", "2"), env=env, cwd=tmp_path, stdout=out, stderr=err
            )
            try:
                await wait_for_connections(http, server.base_url, 1)
                await http.post(f"{server.base_url}/stories/{story_id}/view", headers=bob.auth)
                await http.post(
                    f"{server.base_url}/stories/{story_id}/reactions", json={"emoji": "🔥"}, headers=bob.auth
                )
                assert await process.wait() == 0, err_path.read_text()
            finally:
                if process.poll() is None:
                    process.kill()
                    await process.wait()
    lines = out_path.read_text().splitlines()
    events = [orjson.loads(line) for line in lines]
    assert [event["type"] for event in events] == ["story.viewed", "story.reacted"]
    assert events[1]["payload"]["emoji"] == "🔥"
    assert events[0]["payload"]["viewer_id"] == bob.user_id
    assert "listening" in err_path.read_text()


async def test_listen_with_a_bad_token_is_one_line_and_exit_5(database_url, tmp_path):
    async with stories_serve(database_url, tmp_path / "server") as server:
        result = await trio.run_process(
            listen_command("--url", server.base_url, "--token", "not-a-token"),
            env=clean_env(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 5
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "401 unauthorized" in lines[0]
    assert result.stdout == b""


async def test_listen_without_a_token_says_how_to_give_one(tmp_path):
    result = await trio.run_process(listen_command(), env=clean_env(), cwd=tmp_path, capture_stderr=True, check=False)
    assert result.returncode == 2
    assert "STORIES_TOKEN" in result.stderr.decode()


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://localhost:5001", ("localhost", 5001, "/ws", False)),
        ("https://api.example/", ("api.example", 443, "/ws", True)),
        ("ws://127.0.0.1:8080/ws?after=1", ("127.0.0.1", 8080, "/ws?after=1", False)),
        ("wss://api.example/ws", ("api.example", 443, "/ws", True)),
    ],
)
def test_websocket_target(url, target):
    assert websocket_target(url) == target


@pytest.mark.parametrize("url", ["localhost:5000", "ftp://x/", "http://:80", "http://h:port/"])
def test_websocket_target_refuses_what_is_not_a_service_url(url):
    with pytest.raises(ListenFailed, match="--url"):
        websocket_target(url)


async def test_a_ping_that_crosses_listens_close_is_no_failure(nursery):
    """A server may ping while `--count` closes the socket; trio-websocket then fails answering it
    (python-trio/trio-websocket#184). Every event asked for was printed: that is a success. The server below
    makes the crossing certain: it answers the client's close frame with a ping first."""

    async def serve_one(stream: trio.SocketStream) -> None:
        server = WSConnection(ConnectionType.SERVER)
        while True:
            server.receive_data(await stream.receive_some(4096))
            for event in server.events():
                if isinstance(event, Request):
                    await stream.send_all(server.send(AcceptConnection()))
                    await stream.send_all(server.send(Message(data='{"type": "story.viewed"}')))
                elif isinstance(event, CloseConnection):
                    # An empty ping frame by hand: wsproto, rightly, sends none once the peer has closed.
                    await stream.send_all(PING_FRAME + server.send(event.response()))
                    return

    listeners = await nursery.start(partial(trio.serve_tcp, serve_one, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    out = io.StringIO()
    with trio.fail_after(WAIT):
        await listen(f"http://127.0.0.1:{port}", "a-token", count=1, out=out)
    assert orjson.loads(out.getvalue()) == {"type": "story.viewed"}
