"""Supervision: run an actor, restart it with the one backoff policy (stories/backoff.py) when it crashes
(STYLE R3).

A crash (any Exception, including an ExceptionGroup of Exceptions from the actor's own nursery) is
logged, counted in `actor_restarts_total{actor}` and followed by a restart. A cancel, KeyboardInterrupt
or a group mixing them passes through: a cancel always ends the process, a crash never does. A failure
before the first incarnation has started propagates, so a bad configuration fails the boot.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
import trio

from stories.backoff import DEFAULT_HEALTHY_AFTER, Backoff

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from stories.metrics import Metrics

__all__ = ["ActorReturned", "ActorSpec", "supervise"]

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class ActorSpec:
    """What to supervise: a name for logs and metrics, and the actor's `run` (never returns)."""

    name: str
    run: Callable[..., Awaitable[object]]


class ActorReturned(RuntimeError):
    """An actor's run() returned: actors run until cancelled, so this counts as a crash."""


async def supervise(
    spec: ActorSpec,
    metrics: Metrics,
    *,
    rng: random.Random | None = None,
    healthy_reset: float = DEFAULT_HEALTHY_AFTER,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `spec` forever. Reports started once the first incarnation has started."""
    backoff = Backoff(rng=rng or random.Random(), healthy_after=healthy_reset)
    restarts = metrics.actor_restarts.labels(actor=spec.name)
    started = False
    with structlog.contextvars.bound_contextvars(actor=spec.name):
        while True:
            began = trio.current_time()
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(spec.run)
                    if not started:
                        started = True
                        task_status.started()
                        log.info("actor.started")
                raise ActorReturned(f"actor {spec.name} returned")
            except Exception as exc:
                if not started:
                    raise
                delay = backoff.delay_after(trio.current_time() - began)
                restarts.inc()
                log.error("actor.crashed", error=repr(exc), restart_in=round(delay, 3), exc_info=exc)
            await trio.sleep(delay)
            log.info("actor.restarting")
