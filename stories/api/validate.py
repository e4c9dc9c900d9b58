"""Field readers for request bodies: each returns a clean value or raises a 400 naming the field."""

from __future__ import annotations

import unicodedata
from typing import Any

from stories.errors import InvalidRequest

__all__ = ["MAX_DISPLAY_NAME_LENGTH", "display_name", "invalid", "optional_string", "required_string"]

MAX_DISPLAY_NAME_LENGTH = 50


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


def display_name(body: dict[str, Any]) -> str | None:
    """API.md "Profiles": 1..50 characters after trimming, no control characters; null or absent is none."""
    value = body.get("display_name")
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid("display_name", "must be a string or null")
    name = value.strip()
    if not 1 <= len(name) <= MAX_DISPLAY_NAME_LENGTH:
        raise invalid("display_name", f"must be 1 to {MAX_DISPLAY_NAME_LENGTH} characters after trimming, or null")
    # Cc is the control characters proper (C0, DEL, C1; NUL included). Format characters (Cf) stay allowed:
    # the zero-width joiner holds many emoji together.
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise invalid("display_name", "must not contain control characters")
    return name
