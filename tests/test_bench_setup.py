"""The benches need the machine's PostgreSQL (--admin-url): without one they end in one line, not a traceback."""

from __future__ import annotations

import pytest

from bench.server import fresh_database
from tests.processes import run_bench

# Nothing listens on port 1; the password must never show.
UNREACHABLE = "postgres://nobody:hunter2-secret@127.0.0.1:1/none"


def test_fresh_database_on_an_unreachable_server_is_one_line_naming_the_server() -> None:
    with pytest.raises(SystemExit) as ended, fresh_database(UNREACHABLE):
        pytest.fail("no database can be created there")
    message = str(ended.value.code)
    assert "\n" not in message
    assert message.startswith("bench: cannot use the PostgreSQL at postgres://nobody:***@127.0.0.1:1/none (")
    assert "--admin-url" in message
    assert "hunter2-secret" not in message


@pytest.mark.parametrize("bench", ["feed_plans", "realtime"])
def test_a_bench_without_its_postgresql_exits_1_with_one_line(bench: str) -> None:
    result = run_bench(bench, "--admin-url", UNREACHABLE)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("bench: cannot use the PostgreSQL at"), line
