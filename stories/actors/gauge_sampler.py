"""MetricsExporter: samples gauges that nobody updates on their own (pool, sockets) on a tick."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

    from stories.metrics import Metrics

__all__ = ["MetricsExporter"]

DEFAULT_SAMPLE_INTERVAL = 5.0


@dataclass(slots=True)
class MetricsExporter:
    """Owns nothing but the sampling loop. Inbox: none. Backpressure: self-paced.
    Restart: safe, samples are idempotent.

    `samplers` are cheap synchronous callables that set gauges from the objects they close over.
    """

    metrics: Metrics
    samplers: list[Callable[[Metrics], None]] = field(default_factory=list)
    interval: float = DEFAULT_SAMPLE_INTERVAL

    def sample(self) -> None:
        for sampler in self.samplers:
            sampler(self.metrics)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        self.sample()
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            self.sample()
