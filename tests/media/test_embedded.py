"""`stories serve` with no MINIO_* settings: the embedded SeaweedFS starts with it, serves uploads, and stops with
it; one DATA_DIR has one embedded store; a bucket name the store refuses stops the start at once."""

from __future__ import annotations

import os

import httpx
import pytest
import trio

from stories.errors import ConfigError
from stories.media.embedded import EmbeddedSeaweedFS, find_weed
from tests.processes import signup, stories_serve

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(100)


async def test_serve_runs_and_stops_the_embedded_store(database_url, tmp_path):
    async with (
        httpx.AsyncClient(trust_env=False) as http,
        stories_serve(database_url, tmp_path, MINIO_ENDPOINT="") as server,
    ):
        (started,) = server.logged("storage.embedded.started")
        health = (await http.get(f"{server.base_url}/healthz")).json()
        assert health["checks"]["storage"] == "ok"
        ada = await signup(http, server.base_url)
        presigned = await http.post(
            f"{server.base_url}/upload/presigned",
            json={"content_type": "image/png", "size": len(PNG)},
            headers=ada.auth,
        )
        ticket = presigned.json()
        assert ticket["upload_url"].startswith(started["endpoint"])
        put = await http.put(ticket["upload_url"], content=PNG, headers=ticket["headers"])
        assert put.status_code == 200
        created = await http.post(
            f"{server.base_url}/stories",
            json={"media_key": ticket["media_key"], "visibility": "private"},
            headers=ada.auth,
        )
        assert (await http.get(created.json()["media_url"])).content == PNG
        await server.stop()
    assert server.process.returncode == 0
    assert server.logged("storage.embedded.stopped")
    assert not await trio.Path(f"/proc/{started['pid']}").exists()  # the child is gone


async def test_one_data_dir_has_one_embedded_store(tmp_path):
    weed = find_weed()
    assert weed is not None
    async with trio.open_nursery() as nursery:
        config = await nursery.start(EmbeddedSeaweedFS(tmp_path, weed, "media", "us-east-1").run)
        assert config.endpoint.startswith("http://127.0.0.1:")
        with pytest.raises(ConfigError, match=r"^DATA_DIR '.*' is in use by another process") as refused:
            await nursery.start(EmbeddedSeaweedFS(tmp_path, weed, "media", "us-east-1").run)
        assert refused.value.variable == "DATA_DIR"
        nursery.cancel_scope.cancel("done")


async def test_the_unix_sockets_the_store_makes_in_tmp_are_removed_when_it_stops(tmp_path):
    weed = find_weed()
    assert weed is not None
    store = EmbeddedSeaweedFS(tmp_path, weed, "media", "us-east-1")
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        made = [path for path in store.socket_paths if await trio.Path(path).is_socket()]
        assert len(made) >= 2  # the S3 gateway's gRPC socket and the admin server's, at least
        nursery.cancel_scope.cancel("done")
    assert [path for path in made if await trio.Path(path).exists()] == []


async def test_a_bucket_name_the_store_refuses_stops_the_start_at_once(tmp_path):
    weed = find_weed()
    assert weed is not None
    with trio.fail_after(20), pytest.RaisesGroup(pytest.RaisesExc(ConfigError, match="MINIO_BUCKET")):
        async with trio.open_nursery() as nursery:
            await nursery.start(EmbeddedSeaweedFS(tmp_path, weed, "b", "us-east-1").run)
