"""Per-user rate limits of the routes that write (API.md): a token from the caller's bucket, else `429`."""

from __future__ import annotations

from stories.api.deps import current_user_id, deps
from stories.errors import RateLimited

__all__ = ["check_rate"]


async def check_rate(action: str, what: str) -> None:
    """Take one of the caller's tokens for `action`; `what` names it in the 429's message."""
    app = deps()
    decision = await app.limiter.acquire(current_user_id(), action)
    if not decision.allowed:
        app.metrics.rate_limited.labels(action=action).inc()
        limit, minutes = app.limiter.limits[action], app.limiter.period_of(action) / 60
        per = "minute" if minutes == 1 else f"{minutes:g} minutes"
        raise RateLimited(f"{what} is limited to {limit} per {per}", retry_after=decision.retry_after)
