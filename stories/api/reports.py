"""Reports (API.md "Reports and moderation"): a user reports a story or another user.

A reported story leaves the reporter's own reads at once (the store's READABLE fragment; here, the reporter's
feed pages are dropped); the REPORT_HIDE_THRESHOLD-th reporter of a story holds it for review, which applies to
every cached feed at once too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import structlog
from quart import Response, request

from stories.api.declare import DeclaredBlueprint, Route
from stories.api.deps import current_user_id, deps
from stories.api.idempotency import replayed, request_claim
from stories.api.json_io import json_response, read_json_object
from stories.api.json_shapes import report_json
from stories.api.openapi import idempotency_key_param, json_answer, key_reused, path_id, ref
from stories.api.validate import invalid, optional_string, required_string
from stories.clock import to_millis
from stories.errors import InvalidRequest
from stories.store.models import Replay

if TYPE_CHECKING:
    from uuid import UUID

    from stories.store.models import Report

__all__ = ["MAX_NOTE_LENGTH", "NOTE", "REPORT_REASONS", "blueprint", "note_arg"]

log = structlog.get_logger()
blueprint = DeclaredBlueprint("reports", __name__)

REPORT_REASONS = ("spam", "harassment", "nudity", "violence", "hate", "self_harm", "other")
MAX_NOTE_LENGTH = 500


def note_arg(body: dict[str, Any]) -> str | None:
    """An optional free-text note (a reporter's or a moderator's): at most 500 characters; empty is none."""
    note = optional_string(body, "note")
    if note is not None and len(note) > MAX_NOTE_LENGTH:
        raise invalid("note", f"must be at most {MAX_NOTE_LENGTH} characters")
    return note or None


def _reason(body: dict[str, Any]) -> str:
    reason = required_string(body, "reason")
    if reason not in REPORT_REASONS:
        raise invalid("reason", f"must be one of {', '.join(REPORT_REASONS)}")
    return reason


async def _report(target_type: str, target_id: UUID) -> Response:
    body = await read_json_object()
    reason, note = _reason(body), note_arg(body)
    reporter_id = current_user_id()
    if target_type == "user" and target_id == reporter_id:
        raise InvalidRequest("you cannot report yourself")
    app = deps()

    def render(report: Report) -> bytes:
        return orjson.dumps(report_json(report))

    # The route's path is part of the request: one key and body sent for two targets are two requests.
    claim = request_claim(body, render, scope=request.path)
    filed = await app.store.file_report(
        reporter_id,
        target_type,
        target_id,
        reason,
        note,
        to_millis(app.clock.now()),
        app.settings.report_hide_threshold,
        claim,
    )
    if isinstance(filed, Replay):
        return replayed(filed, claim.key if claim else "")
    if target_type == "story":
        # Also on a repeat: the first attempt may have committed and been cut off before it told the cache.
        await app.feeds.changed(reporter_id)
        if filed.hid_story:
            await app.feeds.stories_hidden([target_id])
    if filed.created:
        app.metrics.reports.labels(reason=reason).inc()
        log.info(
            "report_filed",
            report_id=str(filed.id),
            target_type=target_type,
            target_id=str(target_id),
            reason=reason,
            held_for_review=filed.hid_story,
        )
    return json_response(report_json(filed), 201 if filed.created else 200)


NOTE = {
    "type": ["string", "null"],
    "maxLength": MAX_NOTE_LENGTH,
    "description": f"at most {MAX_NOTE_LENGTH} characters",
}
REPORT_EXAMPLE = {"report_id": "5d41402a-bc4b-4a76-9b19-9c9bd3f0c2a1", "status": "open"}
_REPORT_BODY = {
    "type": "object",
    "required": ["reason"],
    "properties": {"reason": {"enum": list(REPORT_REASONS)}, "note": NOTE},
}
_REUSED = key_reused("body or target")
_IDEMPOTENCY_KEY = idempotency_key_param("c1a0-report-1", " (as for POST /stories)")


def _report_route(path: str, operation_id: str, what: str) -> Route:
    return Route(
        "POST",
        path,
        operation_id,
        "reports",
        f"Report {what}",
        {
            "201": json_answer(
                ref("Report"),
                "filed (or, for a retry with the same Idempotency-Key and body, the original report)",
                REPORT_EXAMPLE,
            ),
            "200": json_answer(ref("Report"), "you had reported it already: your existing report", REPORT_EXAMPLE),
            **_REUSED,
        },
        table_answer="`201` report (`200` the existing one)",
        description=f"Only for {what} you may see (else 404); yourself or your own story: 400. One report "
        "per reporter and target. A reported story leaves your reads at once; REPORT_HIDE_THRESHOLD "
        "reporters hide it from everyone but its author until a moderator decides.",
        body=_REPORT_BODY,
        body_example={"reason": "spam", "note": "links to a scam"},
        parameters=[*path_id("id", "story" if what == "a story" else "user"), _IDEMPOTENCY_KEY],
    )


REPORT_STORY = _report_route("/stories/{id}/report", "reportStory", "a story")
REPORT_USER = _report_route("/users/{id}/report", "reportUser", "a user")


# Route parameters are named `id` so metrics and docs show API.md's templates.
@blueprint.declare(REPORT_STORY)
async def report_story(id: UUID) -> Response:
    return await _report("story", id)


@blueprint.declare(REPORT_USER)
async def report_user(id: UUID) -> Response:
    return await _report("user", id)
