"""The declaration shapes the social-graph routes share (API.md "Social graph"): an edge to another user that
you add with POST and remove with DELETE (follow, block, mute), and a page of users with the time each was listed
(followers, following, your blocks and mutes). Each route still states its own path, names and words."""

from __future__ import annotations

from typing import Any

from stories.api.declare import Route
from stories.api.openapi import (
    BAD_REQUEST,
    NOT_FOUND,
    UNAUTHORIZED,
    UNAVAILABLE,
    json_answer,
    paging,
    path_id,
    ref,
)
from stories.api.paging import DEFAULT_LIST_LIMIT

__all__ = ["add_edge_route", "remove_edge_route", "user_page_route"]


def add_edge_route(
    path: str, operation_id: str, summary: str, schema: str, answer: str, example: dict[str, Any], description: str
) -> Route:
    """POST `path` (`{user_id}` in it): idempotent, 200 with the edge (`schema`), 400 for yourself, 404 for an
    unknown user."""
    return Route(
        "POST",
        path,
        operation_id,
        "social",
        summary,
        {
            "200": json_answer(ref(schema), answer, example),
            **BAD_REQUEST,
            **UNAUTHORIZED,
            **NOT_FOUND,
            **UNAVAILABLE,
        },
        description=description,
        parameters=path_id("user_id", "user"),
        table_answer=f"`200` {schema.lower()}",
    )


def remove_edge_route(path: str, operation_id: str, summary: str, gone: str) -> Route:
    """DELETE `path` (`{user_id}` in it): idempotent, 204 (`gone` says what is true after)."""
    return Route(
        "DELETE",
        path,
        operation_id,
        "social",
        summary,
        {"204": {"description": gone}, **UNAUTHORIZED, **NOT_FOUND, **UNAVAILABLE},
        parameters=path_id("user_id", "user"),
        table_answer="`204`",
    )


def user_page_route(
    path: str,
    operation_id: str,
    summary: str,
    schema: str,
    example: dict[str, Any],
    *,
    of_user: str | None = None,
    description: str | None = None,
) -> Route:
    """GET `path`: a page of users (`schema`). `of_user` names the path parameter of the user whose list it is
    (404 when unknown); without it the list is the caller's own."""
    return Route(
        "GET",
        path,
        operation_id,
        "social",
        summary,
        {
            "200": json_answer(ref(schema), "a page", example),
            **BAD_REQUEST,
            **UNAUTHORIZED,
            **(NOT_FOUND if of_user else {}),
            **UNAVAILABLE,
        },
        description=description,
        parameters=(path_id(of_user, "user") if of_user else []) + paging(DEFAULT_LIST_LIMIT),
        table_answer="`200` page of users",
    )
