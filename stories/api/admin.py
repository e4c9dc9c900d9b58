"""Moderation (API.md "Reports and moderation"): the /admin routes, for moderators only.

Everyone else is answered `404`, with the body of an unknown route: the routes reveal nothing, not even who
moderates. (A request without a valid token is a `401`, as on every non-public route.) The role is read from the
database on each /admin request, so a grant or revoke applies to the very next one, on every process.

Every decision is one transaction with its audit entry (stories/store/moderation.py); the caches are told after
it commits, here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

import structlog
from quart import Blueprint, Response, request

from stories.api.bodies import json_response, read_json_object
from stories.api.deps import current_user_id, deps
from stories.api.paging import cursor_arg, limit_arg, page_json
from stories.api.present import audit_json, case_json
from stories.api.profiles import parse_user_id
from stories.api.reports import note_arg
from stories.api.validate import invalid, required_string
from stories.clock import to_millis
from stories.errors import NotFound

if TYPE_CHECKING:
    from collections.abc import Sequence

    from stories.api.deps import AppDeps
    from stories.store.models import ReportCase

__all__ = ["ACTIONS", "blueprint", "suspension_committed"]

log = structlog.get_logger()
blueprint = Blueprint("admin", __name__, url_prefix="/admin")

ACTIONS = ("dismiss", "remove_story", "suspend_user")
STATUSES = ("open", "resolved")
DEFAULT_REPORTS_LIMIT = 20
DEFAULT_AUDIT_LIMIT = 50


@blueprint.before_request
async def _moderators_only() -> None:
    # A CORS preflight carries no token (the auth hook lets it through); quart-cors answers it.
    if request.method == "OPTIONS":
        return
    if not await deps().store.is_moderator(current_user_id()):
        raise NotFound("no such route")


async def suspension_committed(app: AppDeps, user_id: UUID, story_ids: Sequence[UUID]) -> None:
    """Runs once a suspension has committed (never before, never in its transaction): the one place that tells
    everything else. The user's tokens and logins answer `403 account_suspended` here at once and on every process
    within 1 s, their sockets close (the access watcher; its trigger-filled log is the net under a lost push); their
    live stories leave every cached feed at once (every read already leaves them out)."""
    app.access.account_changed(user_id)
    await app.feeds.stories_hidden(story_ids)


def _media_url(case: ReportCase) -> str | None:
    app = deps()
    if case.story is None or app.media is None:
        return None
    return app.media.media_url(case.story, app.clock.now())


@blueprint.get("/reports")
async def reports() -> Response:
    status = request.args.get("status", "open")
    if status not in STATUSES:
        raise invalid("status", f"must be one of {', '.join(STATUSES)}")
    limit, cursor = limit_arg(DEFAULT_REPORTS_LIMIT), cursor_arg()
    rows = await deps().store.report_cases(status, limit + 1, cursor)
    return json_response(page_json("reports", rows, limit, lambda case: case_json(case, _media_url(case))))


def _parse_entry_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound("no such report") from None


@blueprint.post("/reports/<id>/resolve")
async def resolve(id: str) -> Response:
    entry_id = _parse_entry_id(id)
    body = await read_json_object()
    action = required_string(body, "action")
    if action not in ACTIONS:
        raise invalid("action", f"must be one of {', '.join(ACTIONS)}")
    note = note_arg(body)
    app = deps()
    moderator_id = current_user_id()
    resolution = await app.store.resolve(moderator_id, entry_id, action, note, to_millis(app.clock.now()))
    case = resolution.case
    # Told also on a repeat of the same decision: the first attempt may have committed and been cut off before.
    if action == "remove_story" and case.story is not None:
        await app.feeds.story_deleted(case.user_id, case.story.id)
    elif action == "suspend_user":
        await suspension_committed(app, case.user_id, resolution.hidden_story_ids)
    if resolution.changed:
        app.metrics.moderation_actions.labels(action=action).inc()
        log.info(
            "moderation.resolved",
            report_id=str(case.id),
            action=action,
            target_type=case.target_type,
            target_id=str(case.target_id),
        )
    return json_response(case_json(case, _media_url(case)))


@blueprint.post("/users/<id>/unsuspend")
async def unsuspend(id: str) -> Response:
    user_id = parse_user_id(id)
    # The body is optional: `{"note": "..."}` for the audit log.
    note = note_arg(await read_json_object()) if request.content_length else None
    app = deps()
    changed = await app.store.unsuspend(current_user_id(), user_id, note, to_millis(app.clock.now()))
    if changed is None:
        raise NotFound("no such user")
    # Also on a repeat: the first attempt may have committed and been cut off before it told the processes.
    app.access.account_changed(user_id)
    if changed:
        app.metrics.moderation_actions.labels(action="unsuspend_user").inc()
        log.info("moderation.unsuspended", user_id=str(user_id))
    return json_response({"user_id": str(user_id), "suspended": False})


@blueprint.get("/audit")
async def audit() -> Response:
    limit, cursor = limit_arg(DEFAULT_AUDIT_LIMIT), cursor_arg()
    rows = await deps().store.audit(limit + 1, cursor)
    return json_response(page_json("entries", rows, limit, audit_json))
