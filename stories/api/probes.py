"""What the probes (/healthz, /readyz, /metrics) read, apart from the rest of the app's collaborators.

The API app and the `stories worker` app both serve the probes; only the API has the full `AppDeps`, so the
probes and the per-request hooks read this smaller bundle instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from quart import current_app
from quart_trio import QuartTrio

if TYPE_CHECKING:
    from stories.actors.relay import EventRelay
    from stories.media.link import StorageLink
    from stories.metrics import Metrics
    from stories.process_phase import Lifecycle
    from stories.redis import RedisLink
    from stories.settings import Settings
    from stories.store import Store

__all__ = ["ProbedApp", "Probes", "probes"]


@dataclass(frozen=True, slots=True)
class Probes:
    settings: Settings
    store: Store
    metrics: Metrics
    redis: RedisLink | None
    life: Lifecycle
    # None: this process relays no events (`stories worker`), so readiness does not wait for a relay.
    relay: EventRelay | None = None
    # None: object storage is off (MINIO_ENDPOINT=off, nothing to embed, or a worker without MINIO_*).
    media: StorageLink | None = None


class ProbedApp(QuartTrio):
    probes: Probes


def probes() -> Probes:
    """The running app's probe collaborators (inside a request context)."""
    return cast("ProbedApp", current_app).probes
