"""The OpenAPI document's shared schemas (`components.schemas`): the shapes stories/api/json_shapes.py renders,
which the routes' declarations name with `ref("Story")` and the like."""

from __future__ import annotations

from typing import Any

from stories.api.admin import ACTIONS, STATUSES
from stories.api.media import CONTENT_TYPES
from stories.api.openapi import (
    COUNT,
    DISPLAY_NAME,
    EVENT_ID,
    FOLLOW_COUNTS,
    TIME,
    UUID_SCHEMA,
    VISIBILITY,
    closed_object,
    page,
    ref,
    user_list,
)
from stories.api.reports import REPORT_REASONS
from stories.domain import REACTION_EMOJIS

__all__ = ["component_schemas"]


def component_schemas() -> dict[str, Any]:
    counts = FOLLOW_COUNTS
    emoji = {"enum": list(REACTION_EMOJIS)}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "description": "a stable snake_case code"},
                "message": {"type": "string", "description": "for humans; may change"},
                "fields": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "validation errors: the field and what is wrong with it",
                },
            },
            "additionalProperties": False,
        },
        "Session": closed_object(
            {
                "token": {"type": "string", "description": "HS256 JWT (claims sub, sid, iat, exp)"},
                "user_id": UUID_SCHEMA,
                "email": {"type": "string"},
                "refresh_token": {
                    "type": "string",
                    "minLength": 43,
                    "description": "opaque, 256 random bits; works once (POST /token/refresh); lives "
                    "REFRESH_TOKEN_DAYS from the session's last refresh",
                },
                "expires_in": {"type": "integer", "minimum": 1, "description": "seconds the token is valid"},
            }
        ),
        "SessionList": closed_object(
            {
                "sessions": {
                    "type": "array",
                    "items": closed_object(
                        {
                            "session_id": UUID_SCHEMA,
                            "created_at": TIME,
                            "last_used_at": {**TIME, "description": "the last login or refresh"},
                            "user_agent": {"type": ["string", "null"], "maxLength": 256},
                            "current": {"type": "boolean", "description": "the session of this request's token"},
                        }
                    ),
                }
            }
        ),
        "Author": closed_object({"user_id": UUID_SCHEMA, "display_name": DISPLAY_NAME}),
        "Story": closed_object(
            {
                "id": UUID_SCHEMA,
                "author_id": UUID_SCHEMA,
                "author": ref("Author"),
                "text": {"type": ["string", "null"]},
                "media_key": {"type": ["string", "null"]},
                "media_url": {
                    "type": ["string", "null"],
                    "description": "a presigned GET of the media; null without media or object storage",
                },
                "visibility": VISIBILITY,
                "created_at": TIME,
                "expires_at": TIME,
                "view_count": COUNT,
                "reaction_count": COUNT,
            }
        ),
        "Feed": page("stories", ref("Story")),
        "View": closed_object(
            {"story_id": UUID_SCHEMA, "viewer_id": UUID_SCHEMA, "viewed_at": TIME, "first_view": {"type": "boolean"}}
        ),
        "Reaction": closed_object(
            {"id": UUID_SCHEMA, "story_id": UUID_SCHEMA, "user_id": UUID_SCHEMA, "emoji": emoji, "created_at": TIME}
        ),
        "Upload": closed_object(
            {
                "upload_url": {"type": "string", "description": "PUT the file here, once, within expires_in"},
                "method": {"const": "PUT"},
                "headers": closed_object({"Content-Type": {"enum": list(CONTENT_TYPES)}}),
                "media_key": {"type": "string", "description": "uploads/<your user id>/<random>.<extension>"},
                "expires_in": {"type": "integer", "minimum": 1, "description": "seconds the upload_url stays valid"},
            }
        ),
        "Follow": closed_object({"follower_id": UUID_SCHEMA, "followee_id": UUID_SCHEMA, "created_at": TIME}),
        "Block": closed_object({"blocker_id": UUID_SCHEMA, "blocked_id": UUID_SCHEMA, "created_at": TIME}),
        "Mute": closed_object({"muter_id": UUID_SCHEMA, "muted_id": UUID_SCHEMA, "created_at": TIME}),
        "Stats": closed_object(
            {
                "posted": COUNT,
                "views": COUNT,
                "unique_viewers": COUNT,
                "reactions": {
                    "type": "object",
                    "propertyNames": emoji,
                    "additionalProperties": COUNT,
                    "description": "reactions per emoji; emojis without reactions are left out",
                },
            }
        ),
        "Me": closed_object(
            {
                "user_id": UUID_SCHEMA,
                "email": {"type": "string"},
                "display_name": DISPLAY_NAME,
                "created_at": TIME,
                **counts,
            }
        ),
        "Export": {
            "type": "object",
            "required": ["exported_at", "profile"],
            "properties": {
                "exported_at": TIME,
                "profile": {"type": "object", "description": "your account, email included"},
            },
            "additionalProperties": {
                "type": "array",
                "items": {"type": "object"},
                "description": "one list per kind of data: sessions, stories, views, reactions, following, "
                "followers, blocks, mutes, reports (those you filed), uploads",
            },
        },
        "Profile": closed_object(
            {
                "user_id": UUID_SCHEMA,
                "display_name": DISPLAY_NAME,
                "created_at": TIME,
                **counts,
                "followed_by_me": {"type": "boolean"},
                "follows_me": {"type": "boolean"},
            }
        ),
        "FollowList": user_list("followed_at"),
        "BlockList": user_list("blocked_at"),
        "MuteList": user_list("muted_at"),
        "Viewers": page(
            "viewers",
            closed_object(
                {
                    "user_id": UUID_SCHEMA,
                    "display_name": DISPLAY_NAME,
                    "viewed_at": TIME,
                    "reactions": {
                        "type": "array",
                        "items": emoji,
                        "description": "this viewer's reactions to the story, oldest first",
                    },
                }
            ),
        ),
        "Event": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"enum": ["story.viewed", "story.reacted", "resync"]},
                "id": {**EVENT_ID, "description": "orders your events; absent on resync"},
                "payload": {
                    "type": "object",
                    "description": "story.viewed: story_id, viewer_id, viewed_at; "
                    "story.reacted: story_id, user_id, emoji, created_at; absent on resync",
                },
            },
            "additionalProperties": False,
        },
        "Events": closed_object(
            {
                "events": {"type": "array", "items": ref("Event")},
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "the last event's id when more follow at once (pass as ?after=), else null",
                },
            }
        ),
        "Health": closed_object(
            {
                "status": {"enum": ["ok", "degraded"], "description": "degraded: a check is down"},
                "checks": closed_object(
                    {
                        "db": {"enum": ["ok", "down"]},
                        "redis": {"enum": ["ok", "down", "disabled"]},
                        "storage": {"enum": ["ok", "down", "disabled"]},
                    }
                ),
            }
        ),
        "Readiness": closed_object(
            {
                "status": {"enum": ["ok", "degraded"]},
                "checks": closed_object(
                    {
                        "db": {"enum": ["ok", "down"]},
                        "redis": {"enum": ["ok", "down", "disabled"]},
                        "storage": {"enum": ["ok", "down", "disabled"]},
                        "relay": {"enum": ["ok", "down", "disabled"]},
                        "process": {"enum": ["starting", "serving", "draining"]},
                    }
                ),
            }
        ),
    }
    seen_story = closed_object(
        {
            **schemas["Story"]["properties"],
            "seen": {"type": "boolean", "description": "you have recorded a view of it (never your own stories)"},
        }
    )
    schemas["SeenStory"] = seen_story
    schemas["TrayAuthor"] = closed_object(
        {
            "author": ref("Author"),
            "stories": {"type": "array", "items": ref("SeenStory"), "description": "oldest first, at most 100"},
            "has_unseen": {"type": "boolean"},
            "latest_at": TIME,
        }
    )
    schemas["Tray"] = page("authors", ref("TrayAuthor"))
    schemas["AuthorStories"] = closed_object({"stories": {"type": "array", "items": ref("SeenStory")}})

    schemas |= _moderation_schemas()
    return schemas


def _moderation_schemas() -> dict[str, Any]:
    target_type = {"enum": ["story", "user"]}
    return {
        "Report": closed_object({"report_id": UUID_SCHEMA, "status": {"enum": list(STATUSES)}}),
        "ReportEntry": closed_object(
            {
                "report_id": {**UUID_SCHEMA, "description": "names the entry (its first report); resolve takes it"},
                "target_type": target_type,
                "target_id": UUID_SCHEMA,
                "reasons": {
                    "type": "object",
                    "propertyNames": {"enum": list(REPORT_REASONS)},
                    "additionalProperties": {"type": "integer", "minimum": 1},
                    "description": "reports per reason",
                },
                "reporters": {"type": "integer", "minimum": 1},
                "first_reported_at": TIME,
                "status": {"enum": list(STATUSES)},
                "user_suspended": {
                    "type": "boolean",
                    "description": "whether the reported user (or the story's author) is suspended now",
                },
                "resolution": {
                    "oneOf": [
                        {"type": "null"},
                        closed_object(
                            {
                                "action": {"enum": list(ACTIONS)},
                                "note": {"type": ["string", "null"]},
                                "resolved_at": TIME,
                                "moderator_id": {**UUID_SCHEMA, "type": ["string", "null"]},
                            }
                        ),
                    ]
                },
                "story": {**ref("Story"), "description": "story reports: the story as its author sees it, any state"},
                "user": closed_object(
                    {"user_id": UUID_SCHEMA, "display_name": DISPLAY_NAME, "created_at": TIME, **FOLLOW_COUNTS}
                ),
            },
            optional=("story", "user"),
        ),
        "ReportPage": page("reports", ref("ReportEntry")),
        "AuditEntry": closed_object(
            {
                "actor_id": {
                    **UUID_SCHEMA,
                    "type": ["string", "null"],
                    "description": "the moderator; null for an operator's grant or revoke, or a deleted account",
                },
                "action": {
                    "enum": [*ACTIONS, "unsuspend_user", "grant_moderator", "revoke_moderator"],
                },
                "target_type": target_type,
                "target_id": UUID_SCHEMA,
                "note": {"type": ["string", "null"]},
                "at": TIME,
            }
        ),
        "AuditPage": page("entries", ref("AuditEntry")),
    }
