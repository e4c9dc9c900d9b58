"""The app wired to the session's real SeaweedFS (tests/fixtures/storage.py)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from stories.api import create_app
from stories.media.link import StorageLink
from stories.media.storage import StorageConfig, open_object_storage
from tests.fixtures.storage import MEDIA_URL_SECONDS
from tests.helpers import signup


@pytest.fixture
def media_app(app_deps, storage_link):
    return create_app(dataclasses.replace(app_deps, media=storage_link))


@pytest.fixture
def media_client(media_app):
    return media_app.test_client()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A client of the store, as a phone or a browser would be (no proxy from the environment)."""
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


@pytest.fixture
def dead_config(storage_config: StorageConfig) -> StorageConfig:
    """The same bucket and keys, at an address where nothing listens: a store that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return dataclasses.replace(storage_config, endpoint=f"http://127.0.0.1:{port}")


@pytest.fixture
async def dead_link(dead_config: StorageConfig) -> AsyncIterator[StorageLink]:
    async with open_object_storage(dead_config) as storage:
        yield StorageLink(storage, MEDIA_URL_SECONDS)


@pytest.fixture
async def alice(media_client):
    return await signup(media_client)


@pytest.fixture
async def bob(media_client):
    return await signup(media_client)
