"""The service's Prometheus metrics, on a registry of its own (no global default registry).

One `Metrics` object is built at start and handed to whoever counts something; tests build their own.
"""

from __future__ import annotations

import gc
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

# The methods the API uses; any other is counted as "other", so a client cannot mint label values.
HTTP_METHODS = frozenset({"GET", "POST", "PATCH", "DELETE", "OPTIONS", "HEAD"})

# Request latency buckets tuned for a service whose typical request takes 0.5-20 ms.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        r = self.registry
        self.http_requests = Counter("http_requests", "HTTP requests answered", ["route", "method", "code"], registry=r)
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.actor_restarts = Counter(
            "actor_restarts", "Actor incarnations restarted after a crash", ["actor"], registry=r
        )
        self.auth_events = Counter("auth_events", "Sign-up and login outcomes", ["action", "outcome"], registry=r)
        self.stories_created = Counter("stories_created", "Stories created", registry=r)
        self.story_views = Counter("story_views", "First views recorded", registry=r)
        self.reactions = Counter("reactions", "Reactions recorded", registry=r)
        self.stories_expired = Counter("stories_expired", "Stories soft-deleted by the expiry worker", registry=r)
        self.worker_latency = Histogram(
            "worker_latency_seconds", "Duration of one expiry worker run", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.retention_deleted = Counter(
            "retention_deleted", "Rows deleted for good by the expiry worker's retention", ["kind"], registry=r
        )
        self.media_objects_deleted = Counter(
            "media_objects_deleted", "Objects deleted from storage by the media lifecycle", ["reason"], registry=r
        )
        self.rate_limited = Counter("rate_limited", "Requests refused by a rate limit", ["action"], registry=r)
        self.ws_connections = Gauge("ws_connections", "Open WebSocket connections", registry=r)
        self.ws_events_sent = Counter("ws_events_sent", "Events written to WebSockets", registry=r)
        self.ws_events_dropped = Counter("ws_events_dropped", "Events dropped because a mailbox was full", registry=r)
        self.events_horizon_age = Gauge(
            "events_horizon_age_seconds",
            "How long committed realtime events have waited for the event horizon (a long transaction anywhere "
            "in the database holds it back); 0 while nothing waits",
            registry=r,
        )
        self.db_pool_size = Gauge("db_pool_connections", "Connections open in the database pool", registry=r)
        self.db_pool_idle = Gauge("db_pool_idle_connections", "Idle connections in the database pool", registry=r)
        self.feed_cache_requests = Counter(
            "feed_cache_requests", "Feed pages asked of the feed cache, by result", ["result"], registry=r
        )
        self.reports = Counter("reports", "Reports filed (not repeats), by reason", ["reason"], registry=r)
        self.moderation_actions = Counter(
            "moderation_actions", "Moderator decisions and unsuspensions, by kind", ["action"], registry=r
        )
        # Read from the database by the ReportBacklog actor, so every process shows the same (shared) number:
        # aggregate with max(), never sum().
        self.open_reports = Gauge(
            "moderation_open_reports", "Reported targets awaiting a moderator's decision", registry=r
        )
        self.oldest_open_report_age = Gauge(
            "moderation_oldest_open_report_age_seconds",
            "How long the oldest undecided report has waited (0 when none)",
            registry=r,
        )
        self.tray_cache_requests = Counter(
            "tray_cache_requests", "Tray pages asked of the tray cache, by result", ["result"], registry=r
        )
        self.gc_pauses = Histogram(
            "python_gc_pause_seconds",
            "Time the process stood still in the cycle collector, by generation",
            ["generation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request. Label children are looked up once per (route, method, status): the
        registry's own lookup takes a lock and builds a key on every call, on every request."""
        method = method if method in HTTP_METHODS else "other"
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.http_requests.labels(route=route, method=method, code=str(status)),
                self.http_duration.labels(route=route, method=method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def watch_gc(self) -> None:
        """Time every collection of the cycle collector into `python_gc_pause_seconds` (the bench reads it)."""
        started: list[float] = []
        pauses = {generation: self.gc_pauses.labels(generation=str(generation)) for generation in range(3)}

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started.append(time.perf_counter())
            elif started:
                pauses[info["generation"]].observe(time.perf_counter() - started.pop())

        gc.callbacks.append(on_gc)

    def render(self) -> bytes:
        return generate_latest(self.registry)
