"""The HTTP/WebSocket application: `create_app(deps)` builds it around injected collaborators."""

from __future__ import annotations

from quart_cors import cors

from stories.api import (
    account,
    admin,
    auth,
    docs,
    events,
    health,
    media,
    profiles,
    reports,
    sessions,
    social_graph,
    stats,
    stories,
    tray,
    ws,
)
from stories.api.app import StoriesApp
from stories.api.declare import IdConverter, Route
from stories.api.deps import AppDeps
from stories.api.hooks import install_hooks
from stories.api.probe_deps import ProbedApp, Probes

__all__ = ["AppDeps", "ProbedApp", "Probes", "StoriesApp", "api_routes", "create_app", "create_probe_app"]

CORS_MAX_AGE_SECONDS = 600
# Every blueprint of the API, in the order docs/API.md's route table lists their routes.
BLUEPRINTS = (
    auth.blueprint,
    sessions.blueprint,
    profiles.blueprint,
    account.blueprint,
    stories.blueprint,
    tray.blueprint,
    social_graph.follows_blueprint,
    stats.blueprint,
    social_graph.blocks_blueprint,
    media.blueprint,
    events.blueprint,
    reports.blueprint,
    admin.blueprint,
    health.blueprint,
    docs.blueprint,
)


def api_routes() -> list[Route]:
    """Every route `create_app` serves, declared: the blueprints' and /ws."""
    return [*(route for blueprint in BLUEPRINTS for route in blueprint.declared.values()), ws.ROUTE]


def create_app(app_deps: AppDeps) -> StoriesApp:
    app = StoriesApp(__name__)
    app.deps = app_deps
    app.probes = Probes(
        settings=app_deps.settings,
        store=app_deps.store,
        metrics=app_deps.metrics,
        redis=app_deps.redis,
        life=app_deps.life,
        relay=app_deps.relay,
        media=app_deps.media,
    )
    settings = app_deps.settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Unexpected errors go to our handler (a JSON 500 that reveals nothing), in tests too.
    app.config["PROPAGATE_EXCEPTIONS"] = False
    install_hooks(app)
    app.url_map.converters["id"] = IdConverter
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    # Routing only, no view: upgrades of /ws never reach Quart (StoriesApp.asgi_app serves them, ws.py says
    # why). The rule makes a plain HTTP GET of /ws a WebsocketMismatch, which the hooks answer 426.
    app.url_map.add(app.url_rule_class(ws.ROUTE.rule, methods={"GET"}, websocket=True, endpoint="ws"))
    cors(
        app,
        allow_origin=list(settings.cors_origins),
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        expose_headers=["X-Request-ID", "Retry-After"],
        max_age=CORS_MAX_AGE_SECONDS,
    )
    return app


def create_probe_app(probes: Probes) -> ProbedApp:
    """/healthz, /readyz and /metrics alone, with the same request hooks: what `stories worker` serves."""
    app = ProbedApp(__name__)
    app.probes = probes
    app.config["MAX_CONTENT_LENGTH"] = probes.settings.max_body_bytes
    app.config["PROPAGATE_EXCEPTIONS"] = False
    install_hooks(app)
    app.register_blueprint(health.blueprint)
    return app
