"""The supervised actors of one process (docs/ARCHITECTURE.md) and the supervisor that keeps them running."""

from stories.actors.gauge_sampler import MetricsExporter
from stories.actors.supervisor import ActorSpec, supervise

__all__ = ["ActorSpec", "MetricsExporter", "supervise"]
