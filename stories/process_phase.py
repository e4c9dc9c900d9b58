"""Where a process is in its life: starting, serving or draining. Signals move it on; /readyz reads it."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

__all__ = ["Lifecycle"]


@dataclass(slots=True)
class Lifecycle:
    """What a signal does: before `started`, the first one cancels the start (a half-started process has nothing
    to drain); after, it sets `shutdown`, the graceful drain. The second signal cancels everything.

    The composition root sets `started` once every actor runs and the app is built, just before it listens.
    """

    shutdown: trio.Event = field(default_factory=trio.Event)
    started: bool = False

    @property
    def phase(self) -> str:
        """`starting`, `serving` or `draining` (a shutdown asked for during the start counts as draining)."""
        if self.shutdown.is_set():
            return "draining"
        return "serving" if self.started else "starting"
