"""`stories serve --workers N` (WORKERS=N): N full server processes on one port under a supervising parent."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import trio

from tests.processes import serve_until_exit, stories_serve

WAIT = 60.0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


async def test_workers_share_one_port_restart_a_crashed_child_and_drain_on_sigterm(database_url, tmp_path):
    async with stories_serve(database_url, tmp_path, WORKERS="2") as server:
        with trio.fail_after(WAIT):
            # The parent's line, then each child's once its socket listens (actors may start before it does).
            await server.wait_for("http.listening", count=1 + 2)
            first = children(server.process.pid)
            assert len(first) == 2
            async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
                for _ in range(10):
                    assert (await http.get("/healthz")).status_code == 200

                os.kill(first[0], signal.SIGKILL)
                (crashed,) = await server.wait_for("worker.crashed")
                assert crashed["exit_code"] == -signal.SIGKILL
                await server.wait_for("worker.started", count=3)
                await server.wait_for("http.listening", count=1 + 3)  # the new child listens
                assert len(children(server.process.pid)) == 2
                for _ in range(10):
                    # A fresh connection each time: the kernel may hand it to either child.
                    response = await http.get("/healthz", headers={"Connection": "close"})
                    assert response.status_code == 200

            await server.stop()
            assert server.process.returncode == 0
        assert [line for line in server.lines() if line["event"] == "shutdown.forced"] == []
        assert server.logged("shutdown.complete")[-1].get("workers") == 2


async def test_a_second_workers_parent_on_the_same_port_says_the_port_is_taken(database_url, tmp_path):
    """Both parents reserve the port with SO_REUSEPORT, which one user's sockets may share: the second used to
    start its children beside the first's."""
    async with stories_serve(database_url, tmp_path / "first", WORKERS="2") as server:
        env = {
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(server.port),
            "DATA_DIR": str(tmp_path / "second"),
            "MINIO_ENDPOINT": "off",
            "WORKERS": "2",
        }
        result = await serve_until_exit(tmp_path, env, WAIT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.decode().splitlines() == [
        f"stories: invalid configuration: PORT {server.port} is already in use on 127.0.0.1; set PORT to a free port"
    ]
