"""A real `stories worker`: the expiry worker alone, probed and scraped on its own port."""

from __future__ import annotations

import signal

import httpx
import trio

from tests.processes import metric_sample, stories_serve

WAIT = 30


async def test_worker_serves_probes_and_its_expiry_metrics(database_url, tmp_path):
    async with (
        stories_serve(database_url, tmp_path, command="worker", EXPIRY_INTERVAL_SECONDS="1") as worker,
        httpx.AsyncClient(timeout=10) as http,
    ):
        base = worker.base_url
        health = await http.get(f"{base}/healthz")
        assert health.status_code == 200, health.text
        assert health.json() == {"status": "ok", "checks": {"db": "ok", "redis": "disabled", "storage": "disabled"}}
        ready = await http.get(f"{base}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {
            "db": "ok",
            "redis": "disabled",
            "storage": "disabled",
            "relay": "disabled",
            "process": "serving",
        }
        with trio.fail_after(WAIT):
            await worker.wait_for("stories_expired", count=2)
        assert await metric_sample(http, base, "worker_latency_seconds_count") >= 1
        assert await metric_sample(http, base, "db_pool_connections") >= 1
        # The probes alone: the API's routes are not served here.
        missing = await http.post(f"{base}/signup", json={})
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"
        assert missing.headers["X-Request-ID"]
        assert await worker.stop(signal.SIGTERM) < WAIT
    assert worker.process.returncode == 0, worker.describe()
    assert "shutdown.complete" in [line.get("event") for line in worker.lines()]
