"""Confirming the caller's password before an irreversible change (POST /me/password, DELETE /me).

Throttled as logins are, in the same budget: a token of the account email's failed-login window is taken first
and given back unless the password turns out wrong, so only wrong passwords count, and they count with failed
logins. A stolen token thus buys no second way to guess the password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from stories.actors.ratelimit import ACTION_LOGIN
from stories.api.auth import login_subject
from stories.errors import Forbidden, RateLimited

if TYPE_CHECKING:
    from stories.api.deps import AppDeps
    from stories.store.sessions import Account

__all__ = ["confirm_password"]

log = structlog.get_logger()


async def confirm_password(app: AppDeps, account: Account, password: str, action: str) -> None:
    """Returns once `password` is the account's; else `403 wrong_password`, or `429` after too many wrong ones.
    `action` names the route in logs and in `auth_events_total{action}`."""
    subject = login_subject(account.email)
    decision = await app.limiter.acquire(subject, ACTION_LOGIN)
    if not decision.allowed:
        app.metrics.rate_limited.labels(action=ACTION_LOGIN).inc()
        app.metrics.auth_events.labels(action=action, outcome="rate_limited").inc()
        message = "too many wrong passwords for this account; try again later"
        raise RateLimited(message, retry_after=decision.retry_after)
    failure: Exception | None = None
    ok = False
    try:
        ok = await app.passwords.verify(password, account.password_hash)
    except Exception as error:  # re-raised below, after the refund (as in auth.login): a 503 is no verdict
        failure = error
    if ok or failure is not None:
        await app.limiter.refund(subject, ACTION_LOGIN)
    if failure is not None:
        raise failure
    if not ok:
        app.metrics.auth_events.labels(action=action, outcome="wrong_password").inc()
        log.info("auth", action=action, outcome="wrong_password", user_id=str(account.user_id))
        raise Forbidden("the password is wrong", code="wrong_password")
