"""Frozen records the store returns. Never asyncpg objects: callers stay on the trio side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

__all__ = ["Migration", "User"]


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    email: str
    password_hash: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
