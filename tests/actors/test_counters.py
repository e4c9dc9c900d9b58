"""CounterFlusher mechanics (a stub store): a flush that fails or is cancelled drops nothing."""

from __future__ import annotations

import uuid
from contextlib import nullcontext

import pytest
import trio

from stories.actors.counters import RECOUNT_CHUNK, CounterFlusher
from stories.errors import StoreUnavailable


class StubStore:
    """Recounts chunks until told to fail or to hang (mechanics only)."""

    def __init__(self, outcome: BaseException | None = None, *, hang: bool = False) -> None:
        self.outcome = outcome
        self.hang = hang
        self.recounted: list[uuid.UUID] = []

    async def recount(self, story_ids):
        if self.hang:
            await trio.sleep_forever()
        if self.outcome is not None:
            raise self.outcome
        self.recounted.extend(story_ids)


def touched(flusher: CounterFlusher, count: int) -> set[uuid.UUID]:
    ids = {uuid.uuid4() for _ in range(count)}
    for story_id in ids:
        flusher.touch(story_id)
    return ids


@pytest.mark.parametrize("outcome", [StoreUnavailable("down"), RuntimeError("a bug")])
async def test_a_failed_flush_keeps_every_touched_story_pending(outcome):
    # A non-Unavailable error dropped the whole batch (2,500 touched, 0 recounted).
    store = StubStore(outcome)
    flusher = CounterFlusher(store)
    ids = touched(flusher, 2_500)
    # Unavailable is logged and kept for the next flush; any other error propagates (the supervisor restarts).
    with nullcontext() if isinstance(outcome, StoreUnavailable) else pytest.raises(type(outcome)):
        await flusher.flush()
    assert flusher.pending == len(ids)
    store.outcome = None
    await flusher.flush()
    assert set(store.recounted) == ids
    assert flusher.pending == 0


async def test_a_cancelled_flush_keeps_every_touched_story_pending(autojump_clock):
    store = StubStore(hang=True)
    flusher = CounterFlusher(store)
    ids = touched(flusher, RECOUNT_CHUNK + 10)
    with trio.move_on_after(1):
        await flusher.flush()
    assert flusher.pending == len(ids)
    store.hang = False
    await flusher.flush()
    assert set(store.recounted) == ids
