"""Every pool statement is bounded on the server, and every pool connection detects a dead peer (issue 16)."""

from __future__ import annotations

import socket
from typing import Any

import asyncpg
import pytest
import trio

from stories.errors import StoreUnavailable
from stories.store import migrate, open_database


async def _sleep(pool: asyncpg.Pool, seconds: float) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_sleep($1)", seconds)


async def _session(pool: asyncpg.Pool) -> dict[str, Any]:
    async with pool.acquire() as conn:
        sock = conn._transport.get_extra_info("socket")
        return {
            "statement_timeout": await conn.fetchval("SHOW statement_timeout"),
            "idle_in_transaction": await conn.fetchval("SHOW idle_in_transaction_session_timeout"),
            "server_keepalive": await conn.fetchval("SHOW tcp_keepalives_idle"),
            "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }


async def test_a_statement_past_the_timeout_is_cancelled_and_answers_503(database_url, tmp_path):
    # A statement with no bound held its pool slot for as long as the server (or a dead peer) took.
    async with open_database(database_url, data_dir=tmp_path, pool_size=1, statement_timeout=1.0) as database:
        with trio.fail_after(8), pytest.raises(StoreUnavailable):
            await database.call(_sleep, 5.0)
        session = await database.call(_session)
        # A migration is not bound by it, and leaves the session's bound as it found it.
        await migrate(database)
        assert await database.call(_session) == session
    assert session["statement_timeout"] == "1s"
    assert session["idle_in_transaction"] == "1s"
    assert session["server_keepalive"] == "10"
    assert session["keepalive"] == 1
    assert session["user_timeout"] == 30_000


async def test_without_a_timeout_statements_are_unbounded(database_url, tmp_path):
    async with open_database(database_url, data_dir=tmp_path, pool_size=1) as database:
        assert (await database.call(_session))["statement_timeout"] == "0"
