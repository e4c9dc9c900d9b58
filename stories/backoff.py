"""The one restart policy: exponential backoff, capped, with full jitter, reset after a healthy run.

Every loop that restarts or retries something uses it: the actor supervisor (stories/actors/supervisor.py), the
worker processes (stories/workers.py), the HTTP server (stories/api/server.py), the embedded object store
(stories/media/embedded.py), the relay's broker reconnects (stories/actors/relay.py) and the database's first
connection (stories/store/database.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["DEFAULT_BACKOFF_CAP", "DEFAULT_BACKOFF_INITIAL", "DEFAULT_HEALTHY_AFTER", "Backoff"]

DEFAULT_BACKOFF_INITIAL = 0.5
DEFAULT_BACKOFF_CAP = 30.0
# A run this long was healthy: the next failure starts the backoff over.
DEFAULT_HEALTHY_AFTER = 60.0


@dataclass(slots=True)
class Backoff:
    """Delay n is uniform in [0, min(cap, initial * 2**n)] (full jitter, so restarts of many processes spread
    out); without `jitter` it is the ceiling itself (a single client retrying a server, where a log line per
    attempt at known times is worth more than spreading)."""

    rng: random.Random = field(default_factory=random.Random)
    initial: float = DEFAULT_BACKOFF_INITIAL
    cap: float = DEFAULT_BACKOFF_CAP
    attempt: int = 0
    jitter: bool = True
    healthy_after: float = DEFAULT_HEALTHY_AFTER

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * 2**self.attempt)
        self.attempt += 1
        return self.rng.uniform(0, ceiling) if self.jitter else ceiling

    def delay_after(self, ran_for: float) -> float:
        """The delay before the next start, after a run of `ran_for` seconds: a healthy run resets first."""
        if ran_for >= self.healthy_after:
            self.reset()
        return self.next_delay()

    def reset(self) -> None:
        self.attempt = 0
