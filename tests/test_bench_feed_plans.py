"""bench/feed_plans.py's reading of the store: the statements it explains are the ones the store sends."""

from __future__ import annotations

from bench.feed_plans import statements_of
from stories.store import engagement


def test_a_statement_sent_from_two_paths_is_explained_once() -> None:
    # aio_add_reaction sends _ADD_REACTION_SQL with and without an idempotency claim: one statement, one plan.
    assert statements_of("aio_add_reaction", engagement) == [engagement._ADD_REACTION_SQL]
