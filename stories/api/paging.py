"""Keyset-paged lists in the query string: `?limit=&cursor=` in, `{"<items>": [...], "next_cursor"}` out."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from quart import request

from stories.api.json_shapes import decode_position, encode_position
from stories.api.validate import invalid

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from stories.store.models import Position

__all__ = ["DEFAULT_LIST_LIMIT", "MAX_LIMIT", "cursor_arg", "limit_arg", "page_json"]

MAX_LIMIT = 100
# The page size of the lists of users (followers, following, blocks, mutes).
DEFAULT_LIST_LIMIT = 50
_LIMIT = re.compile(r"^[0-9]{1,3}$")


class Positioned(Protocol):
    @property
    def position(self) -> Position: ...


T = TypeVar("T", bound=Positioned)
C = TypeVar("C")


def limit_arg(default: int, maximum: int = MAX_LIMIT) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    # ASCII digits only: str.isdigit() also accepts '²' (int() then fails) and '１' (taken as 1).
    if not _LIMIT.match(raw) or not 1 <= int(raw) <= maximum:
        raise invalid("limit", f"must be a whole number from 1 to {maximum}")
    return int(raw)


@overload
def cursor_arg() -> Position | None: ...


@overload
def cursor_arg(decode: Callable[[str], C]) -> C | None: ...


def cursor_arg(decode: Callable[[str], Any] = decode_position) -> Any:
    """`?cursor=`, decoded by `decode` (a keyset position unless the route's cursor is its own), or None."""
    raw = request.args.get("cursor")
    return None if raw is None else decode(raw)


def page_json(field: str, rows: Sequence[T], limit: int, render: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    """A page from `limit + 1` rows: the extra row only tells that another page exists."""
    page = rows[:limit]
    next_cursor = encode_position(page[-1].position) if len(rows) > limit else None
    return {field: [render(row) for row in page], "next_cursor": next_cursor}
