"""The chaos soak (bench/chaos.py) at CI size: one minute of load and faults, then every check it makes.

Two `stories serve` processes on the session's database, a private redis-server (the soak kills it), a TCP
relay to the database (the soak cuts and hangs it). `python -m bench.chaos --minutes 10` is the long run, with
its figures in bench/chaos.md. On failure the message is the soak's report; the servers' logs stay in tmp_path.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import pytest

from bench.chaos import soak

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.redis, pytest.mark.slow]

MINUTES = 1.0


async def test_one_minute_of_chaos_loses_nothing_and_leaves_nothing_stuck(database_url: str, tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on PATH: the soak starts, kills and restarts one of its own")
    report = await soak(database_url, tmp_path, MINUTES)
    print(report.text())
    assert not report.failures, report.text()
