"""bench/feed_plans.py's reading of the store: the statements it explains are the ones the store sends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.feed_plans import statements_of
from stories.store import engagement
from tests.processes import run_bench

if TYPE_CHECKING:
    from tests.fixtures.postgres import PostgresServer

# The whole bench in about a second: every scenario but the extra stories and the blocks, one run each, no report.
SMALL = ["--users", "200", "--follows", "10", "--stories", "2000", "--extra-stories", "0", "--blockers", "0"]
SMALL += ["--runs", "1", "--report", ""]


def test_a_statement_sent_from_two_paths_is_explained_once() -> None:
    # aio_add_reaction sends _ADD_REACTION_SQL with and without an idempotency claim: one statement, one plan.
    assert statements_of("aio_add_reaction", engagement) == [engagement._ADD_REACTION_SQL]


def test_a_small_run_with_fewer_than_ten_fans_explains_every_statement(postgres_server: PostgresServer) -> None:
    # --million 3: the user "followed by 10" has 3 followers; the page half way down starts at the second.
    result = run_bench("feed_plans", "--admin-url", postgres_server.admin_url, *SMALL, "--million", "3", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| +1M | followers half way down, 10 followers |" in result.stdout
