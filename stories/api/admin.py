"""Moderation (API.md "Reports and moderation"): the /admin routes, for moderators only.

Everyone else is answered `404`, with the body of an unknown route: the routes reveal nothing, not even who
moderates. (A request without a valid token is a `401`, as on every non-public route.) The role is read from the
database on each /admin request, so a grant or revoke applies to the very next one, on every process.

Every decision is one transaction with its audit entry (stories/store/moderation.py); the caches are told after
it commits, here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from quart import Response, request

from stories.api.declare import DeclaredBlueprint, Route
from stories.api.deps import current_user_id, deps
from stories.api.json_io import json_response, read_json_object
from stories.api.json_shapes import audit_json, case_json
from stories.api.openapi import (
    AT,
    BOB,
    STORY,
    STORY_EXAMPLE,
    UUID_SCHEMA,
    closed_object,
    code_answer,
    error_answer,
    error_example,
    json_answer,
    paging,
    path_id,
    ref,
)
from stories.api.paging import cursor_arg, limit_arg, page_json
from stories.api.reports import NOTE, REPORT_EXAMPLE, note_arg
from stories.api.validate import invalid, required_string
from stories.clock import to_millis
from stories.errors import NotFound

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

    from stories.api.deps import AppDeps
    from stories.store.models import ReportCase

__all__ = ["ACTIONS", "blueprint", "suspension_committed"]

log = structlog.get_logger()
blueprint = DeclaredBlueprint("admin", __name__)

ACTIONS = ("dismiss", "remove_story", "suspend_user")
STATUSES = ("open", "resolved")
DEFAULT_REPORTS_LIMIT = 20
DEFAULT_AUDIT_LIMIT = 50

_MODERATORS_ONLY = " Moderators only: 404 (as an unknown route) to everyone else."
_MODERATORS_ONLY_ERRORS = (NotFound,)
REPORT_ENTRY_EXAMPLE = {
    "report_id": REPORT_EXAMPLE["report_id"],
    "target_type": "story",
    "target_id": STORY,
    "reasons": {"spam": 3, "hate": 2},
    "reporters": 5,
    "first_reported_at": AT,
    "status": "resolved",
    "user_suspended": False,
    "resolution": {"action": "remove_story", "note": "scam link", "resolved_at": AT, "moderator_id": BOB},
    "story": {**STORY_EXAMPLE, "media_url": None},
}
AUDIT_EXAMPLE = {
    "actor_id": BOB,
    "action": "remove_story",
    "target_type": "story",
    "target_id": STORY,
    "note": "scam link",
    "at": AT,
}


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


LIST_REPORTS = Route(
    "GET",
    "/admin/reports",
    "listReports",
    "moderation",
    "The reports queue, one entry per reported target",
    {
        "200": json_answer(ref("ReportPage"), "a page", {"reports": [REPORT_ENTRY_EXAMPLE], "next_cursor": None}),
    },
    errors=_MODERATORS_ONLY_ERRORS,
    table_answer="`200` page of report entries (moderators; else `404`)",
    description="open: oldest first (the queue); resolved: latest decision first." + _MODERATORS_ONLY,
    parameters=[
        {
            "name": "status",
            "in": "query",
            "description": "open (default) or resolved (400 else)",
            "schema": {"enum": list(STATUSES), "default": "open"},
        },
        *paging(DEFAULT_REPORTS_LIMIT),
    ],
)


@blueprint.declare(LIST_REPORTS)
async def reports() -> Response:
    status = request.args.get("status", "open")
    if status not in STATUSES:
        raise invalid("status", f"must be one of {', '.join(STATUSES)}")
    limit, cursor = limit_arg(DEFAULT_REPORTS_LIMIT), cursor_arg()
    rows = await deps().store.report_cases(status, limit + 1, cursor)
    return json_response(page_json("reports", rows, limit, lambda case: case_json(case, _media_url(case))))


RESOLVE_REPORT = Route(
    "POST",
    "/admin/reports/{id}/resolve",
    "resolveReport",
    "moderation",
    "Decide a reported target",
    {
        "200": json_answer(ref("ReportEntry"), "the entry, resolved", REPORT_ENTRY_EXAMPLE),
        "409": error_answer(
            "own_case: the report is about you or your story (another moderator must decide); already_resolved: "
            "it was decided otherwise before",
            ("own_case", "already_resolved"),
            error_example("already_resolved", "this report was already resolved with dismiss"),
        ),
    },
    errors=_MODERATORS_ONLY_ERRORS,
    table_answer="`200` report entry (moderators; else `404`)",
    description="dismiss: a held story is visible again; remove_story: deleted for everyone as by its "
    "author (400 for a user report); suspend_user: the user (or the story's author) is suspended, "
    "their stories leave every read. One transaction with its audit entry; the same decision again "
    "answers the entry unchanged. The id is the entry's report_id or any report's id in it." + _MODERATORS_ONLY,
    body={
        "type": "object",
        "required": ["action"],
        "properties": {"action": {"enum": list(ACTIONS)}, "note": NOTE},
    },
    body_example={"action": "remove_story", "note": "scam link"},
    parameters=path_id("id", "report"),
)


@blueprint.declare(RESOLVE_REPORT)
async def resolve(id: UUID) -> Response:
    entry_id = id
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


UNSUSPEND_USER = Route(
    "POST",
    "/admin/users/{id}/unsuspend",
    "unsuspendUser",
    "moderation",
    "Lift a user's suspension",
    {
        "200": json_answer(
            closed_object({"user_id": UUID_SCHEMA, "suspended": {"const": False}}),
            "not suspended (any more); idempotent",
            {"user_id": BOB, "suspended": False},
        ),
        "409": code_answer("own_case", "your own account", "another moderator must decide about your own account"),
    },
    errors=_MODERATORS_ONLY_ERRORS,
    table_answer="`200` (moderators; else `404`)",
    description="Audited (with the optional note) when it changes anything." + _MODERATORS_ONLY,
    body={"type": "object", "properties": {"note": NOTE}},
    body_example={"note": "appeal accepted"},
    body_required=False,
    parameters=path_id("id", "user"),
)


@blueprint.declare(UNSUSPEND_USER)
async def unsuspend(id: UUID) -> Response:
    user_id = id
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


LIST_AUDIT = Route(
    "GET",
    "/admin/audit",
    "listAudit",
    "moderation",
    "Every moderator action, newest first",
    {
        "200": json_answer(ref("AuditPage"), "a page", {"entries": [AUDIT_EXAMPLE], "next_cursor": None}),
    },
    errors=_MODERATORS_ONLY_ERRORS,
    table_answer="`200` page of audit entries (moderators; else `404`)",
    description="Kept forever: retention never deletes it." + _MODERATORS_ONLY,
    parameters=paging(DEFAULT_AUDIT_LIMIT),
)


@blueprint.declare(LIST_AUDIT)
async def audit() -> Response:
    limit, cursor = limit_arg(DEFAULT_AUDIT_LIMIT), cursor_arg()
    rows = await deps().store.audit(limit + 1, cursor)
    return json_response(page_json("entries", rows, limit, audit_json))
