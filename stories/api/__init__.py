"""The HTTP/WebSocket application: `create_app(deps)` builds it around injected collaborators."""

from __future__ import annotations

from quart_cors import cors

from stories.api import auth, docs, events, health, social, stories, ws
from stories.api.deps import AppDeps, StoriesApp
from stories.api.hooks import install_hooks

__all__ = ["AppDeps", "StoriesApp", "create_app"]

CORS_MAX_AGE_SECONDS = 600


def create_app(app_deps: AppDeps) -> StoriesApp:
    app = StoriesApp(__name__)
    app.deps = app_deps
    settings = app_deps.settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Unexpected errors go to our handler (a JSON 500 that reveals nothing), in tests too.
    app.config["PROPAGATE_EXCEPTIONS"] = False
    install_hooks(app)
    app.register_blueprint(auth.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(stories.blueprint)
    app.register_blueprint(social.blueprint)
    app.register_blueprint(docs.blueprint)
    app.register_blueprint(ws.blueprint)
    app.register_blueprint(events.blueprint)
    cors(
        app,
        allow_origin=list(settings.cors_origins),
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        expose_headers=["X-Request-ID", "Retry-After"],
        max_age=CORS_MAX_AGE_SECONDS,
    )
    return app
