"""Callers: lookups of users' states shared by the requests of one scheduling round (stories/api/authentication.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import trio

from stories.api.authentication import Callers, bearer_token
from stories.clock import FixedClock
from stories.errors import AccountSuspended, SessionRevoked, Unauthorized
from stories.security import TokenIssuer

SECRET = "callers-test-secret-0123456789abcdef-0123"


class States:
    """A user store that knows every user asked about, and counts its queries."""

    def __init__(self, suspended: frozenset[uuid.UUID] = frozenset()) -> None:
        self.suspended = suspended
        self.queries = 0

    async def user_states(self, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, bool]:
        self.queries += 1
        await trio.sleep(0.01)
        return {user_id: user_id in self.suspended for user_id in user_ids}


def issuer() -> TokenIssuer:
    return TokenIssuer(SECRET, 3600, FixedClock(datetime(2026, 11, 24, tzinfo=UTC)))


async def test_joined_lookups_survive_the_cancellation_of_the_request_that_started_them(autojump_clock):
    """issue 16, defect 3: the first request of a round, cancelled at its checkpoint, left the requests that
    joined its lookup waiting forever. trio runs one round's tasks in order or reversed, so over 20 rounds the
    starter is cancelled after the others joined about half of the time."""
    tokens = issuer()
    joined_and_answered = 0
    for _ in range(20):
        callers = Callers(tokens, States())
        first_scope = trio.CancelScope()
        answered: list[uuid.UUID] = []

        async def first(token: str, scope: trio.CancelScope = first_scope, callers: Callers = callers) -> None:
            with scope:
                await callers.authenticate(token)

        async def joiner(token: str, callers: Callers = callers, answered: list[uuid.UUID] = answered) -> None:
            answered.append((await callers.authenticate(token)).user_id)

        users = [uuid.uuid4() for _ in range(3)]
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(first, tokens.issue(users[0], uuid.uuid4()))
                nursery.start_soon(joiner, tokens.issue(users[1], uuid.uuid4()))
                nursery.start_soon(joiner, tokens.issue(users[2], uuid.uuid4()))
                nursery.start_soon(_cancel, first_scope)
        assert sorted(answered) == sorted(users[1:])
        joined_and_answered += 1
    assert joined_and_answered == 20


async def _cancel(scope: trio.CancelScope) -> None:
    scope.cancel()


async def test_a_round_of_requests_shares_one_lookup_and_suspension_is_403(autojump_clock):
    tokens = issuer()
    suspended = uuid.uuid4()
    store = States(frozenset({suspended}))
    callers = Callers(tokens, store)
    users = [uuid.uuid4() for _ in range(50)]
    issued = [tokens.issue(user_id, uuid.uuid4()) for user_id in users]
    async with trio.open_nursery() as nursery:
        for token in issued:
            nursery.start_soon(callers.authenticate, token)
    assert store.queries == 1
    # Known callers cost no query: not per request, not for a revoked session either.
    for token in issued:
        await callers.authenticate(token)
    revoked = await callers.authenticate(issued[0])
    callers.revoke(revoked.session_id, float("inf"))
    try:
        await callers.authenticate(issued[0])
    except SessionRevoked:
        pass
    else:
        raise AssertionError("a revoked session was let in")
    assert store.queries == 1
    try:
        await callers.authenticate(tokens.issue(suspended, uuid.uuid4()))
    except AccountSuspended:
        pass
    else:
        raise AssertionError("a suspended user was let in")


def test_the_one_bearer_reader_takes_any_case_and_refuses_other_schemes():
    assert bearer_token(None) is None
    assert bearer_token("Bearer abc") == bearer_token("bearer  abc ") == "abc"
    for malformed in ("Basic abc", "Bearer", "Bearer   ", "abc"):
        with pytest.raises(Unauthorized):
            bearer_token(malformed)
