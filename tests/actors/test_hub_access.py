"""The hub's part in revocations and suspensions: closing one session's sockets, or one user's."""

from __future__ import annotations

import uuid

from stories.actors.hub import CloseReason, Hub
from stories.metrics import Metrics


def test_closing_a_session_closes_only_its_sockets() -> None:
    hub = Hub(Metrics())
    user, other_user = uuid.uuid4(), uuid.uuid4()
    revoked, kept = uuid.uuid4(), uuid.uuid4()
    with (
        hub.subscribe(user, revoked) as first,
        hub.subscribe(user, revoked) as second,
        hub.subscribe(user, kept) as third,
        hub.subscribe(other_user, uuid.uuid4()) as fourth,
    ):
        assert hub.close_session(revoked, CloseReason.SESSION_REVOKED) == 2
        assert first.close_reason is second.close_reason is CloseReason.SESSION_REVOKED
        assert third.close_reason is None
        assert fourth.close_reason is None
        assert hub.close_session(revoked, CloseReason.SESSION_REVOKED) == 0  # closed already
        assert CloseReason.SESSION_REVOKED.code == 1008


def test_closing_a_user_closes_every_socket_of_theirs() -> None:
    hub = Hub(Metrics())
    user, other_user = uuid.uuid4(), uuid.uuid4()
    with hub.subscribe(user, uuid.uuid4()) as first, hub.subscribe(user) as second, hub.subscribe(other_user) as third:
        assert hub.has_sockets(user)
        assert set(hub.users()) == {user, other_user}
        assert hub.close_user(user, CloseReason.ACCOUNT_SUSPENDED) == 2
        assert first.close_reason is second.close_reason is CloseReason.ACCOUNT_SUSPENDED
        assert third.close_reason is None
    assert not hub.has_sockets(user)
    assert CloseReason.ACCOUNT_SUSPENDED.code == CloseReason.ACCOUNT_GONE.code == 1008
