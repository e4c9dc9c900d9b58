"""Field readers for request bodies: each returns a clean value or raises a 400 naming the field."""

from __future__ import annotations

from typing import Any

from stories.errors import InvalidRequest

__all__ = ["invalid", "optional_string", "required_string"]


def invalid(field: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {problem}", fields={field: problem})


def optional_string(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL; refuse it here instead of failing in the database.
        raise invalid(field, "must not contain NUL characters")
    return value


def required_string(body: dict[str, Any], field: str) -> str:
    value = optional_string(body, field)
    if value is None:
        raise invalid(field, "is required")
    return value
