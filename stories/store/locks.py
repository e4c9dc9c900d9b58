"""Advisory lock ids: which process does the leader-only housekeeping, and the lock of a pair of users.

Any constants work as long as every process uses the same ones.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uuid import UUID


# Advisory lock ids: any constants work as long as every process uses the same ones.
EXPIRY_LOCK_ID = 0x5701_1E6


def pair_lock(a: UUID, b: UUID) -> int:
    """The advisory lock of an unordered pair of users, taken by follows and blocks between them: a follow
    then either commits before a block (and the block removes it) or sees the block. A collision only
    serializes two unrelated pairs for a moment."""
    low, high = sorted((a, b))
    return int.from_bytes(hashlib.blake2b(low.bytes + high.bytes, digest_size=8).digest(), "big", signed=True)
