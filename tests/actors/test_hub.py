"""The hub's mailbox policy (pure mechanics, MockClock) and the events' encodings."""

from __future__ import annotations

import itertools
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime

import orjson
import pytest
import trio

from stories.actors.hub import CloseReason, Hub
from stories.domain import EventId, MalformedEventId
from stories.events import StoryReacted, StoryViewed
from stories.metrics import Metrics

AT = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)
_ids = itertools.count(1)


def next_id() -> EventId:
    return EventId(1000, next(_ids))


def viewed(author_id: uuid.UUID) -> StoryViewed:
    return StoryViewed(next_id(), author_id=author_id, story_id=uuid.uuid4(), viewer_id=uuid.uuid4(), viewed_at=AT)


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None
    return value


def drain(receive: trio.MemoryReceiveChannel[tuple[EventId, str]]) -> list[dict[str, object]]:
    items = []
    while True:
        try:
            items.append(orjson.loads(receive.receive_nowait()[1]))
        except trio.WouldBlock:
            return items


def test_story_viewed_wire_format() -> None:
    event = viewed(uuid.uuid4())
    assert orjson.loads(event.client_text()) == {
        "type": "story.viewed",
        "id": str(event.id),
        "payload": {
            "story_id": str(event.story_id),
            "viewer_id": str(event.viewer_id),
            "viewed_at": "2026-11-24T10:00:00.123Z",
        },
    }


def test_story_reacted_wire_format() -> None:
    event = StoryReacted(
        next_id(), author_id=uuid.uuid4(), story_id=uuid.uuid4(), user_id=uuid.uuid4(), emoji="🔥", created_at=AT
    )
    assert orjson.loads(event.client_text()) == {
        "type": "story.reacted",
        "id": str(event.id),
        "payload": {
            "story_id": str(event.story_id),
            "user_id": str(event.user_id),
            "emoji": "🔥",
            "created_at": "2026-11-24T10:00:00.123Z",
        },
    }


def test_event_ids_order_as_text_and_round_trip() -> None:
    ids = [EventId(1, 2), EventId(1, 10), EventId(2, 1), EventId(2**40, 0), EventId(2**63 - 1, 2**63 - 1)]
    assert sorted(ids) == ids
    assert sorted(str(i) for i in ids) == [str(i) for i in ids]
    assert all(EventId.parse(str(i)) == i for i in ids)


@pytest.mark.parametrize("text", ["", "1", "0" * 31, "0" * 33, "g" * 32, "A" * 32, " " + "0" * 31])
def test_malformed_event_ids_are_refused(text: str) -> None:
    with pytest.raises(MalformedEventId):
        EventId.parse(text)


async def test_publish_reaches_every_socket_of_the_author_and_nobody_else() -> None:
    metrics = Metrics()
    hub = Hub(metrics)
    author, other = uuid.uuid4(), uuid.uuid4()
    with hub.subscribe(author) as first, hub.subscribe(author) as second, hub.subscribe(other) as bystander:
        assert sample(metrics, "ws_connections") == 3
        event = viewed(author)
        assert hub.publish(event) == 2
        assert [m["id"] for m in drain(first.receive)] == [str(event.id)]
        assert [m["id"] for m in drain(second.receive)] == [str(event.id)]
        assert drain(bystander.receive) == []
        assert hub.publish(viewed(uuid.uuid4())) == 0
        assert hub.stats().connections == 3
        assert hub.stats().users == 2


async def test_unsubscribe_cleans_up() -> None:
    metrics = Metrics()
    hub = Hub(metrics)
    author = uuid.uuid4()
    with hub.subscribe(author) as mailbox:
        pass
    assert hub.stats().connections == 0
    assert hub.stats().users == 0
    assert sample(metrics, "ws_connections") == 0
    assert hub.publish(viewed(author)) == 0
    with pytest.raises(trio.ClosedResourceError):
        mailbox.receive.receive_nowait()


async def test_full_mailbox_drops_and_counts_without_touching_others() -> None:
    metrics = Metrics()
    hub = Hub(metrics, mailbox_size=4, stall_seconds=10)
    author = uuid.uuid4()
    with hub.subscribe(author) as stalled, hub.subscribe(author) as reader:
        for _ in range(6):
            hub.publish(viewed(author))
            drain(reader.receive)
        assert stalled.backlog == 4
        assert stalled.dropped == 2
        assert stalled.close_reason is None
        assert reader.dropped == 0
        assert sample(metrics, "ws_events_dropped_total") == 2
        assert hub.stats().backlog == 4


async def test_mailbox_full_for_the_stall_period_is_closed(autojump_clock: trio.abc.Clock) -> None:
    hub = Hub(Metrics(), mailbox_size=2, stall_seconds=10)
    author = uuid.uuid4()
    with trio.fail_after(60), hub.subscribe(author) as stalled, hub.subscribe(author) as reader:
        for _ in range(3):
            hub.publish(viewed(author))
            drain(reader.receive)
        assert stalled.full_since == trio.current_time()
        await trio.sleep(9.9)
        hub.publish(viewed(author))
        assert stalled.close_reason is None
        await trio.sleep(0.1)
        hub.publish(viewed(author))
        assert stalled.close_reason is CloseReason.SLOW_CLIENT
        # The closed mailbox still hands over what it holds, then ends.
        assert len([text async for text in stalled.receive]) == 2
        # The author's other socket, which kept reading, is untouched.
        assert reader.close_reason is None
        assert reader.dropped == 0
        assert len(drain(reader.receive)) == 2
        hub.publish(viewed(author))
        assert len(drain(reader.receive)) == 1


async def test_a_mailbox_that_catches_up_is_not_closed(autojump_clock: trio.abc.Clock) -> None:
    hub = Hub(Metrics(), mailbox_size=2, stall_seconds=10)
    author = uuid.uuid4()
    with trio.fail_after(60), hub.subscribe(author) as mailbox:
        for _ in range(3):
            hub.publish(viewed(author))
        assert mailbox.full_since is not None
        await trio.sleep(5)
        drain(mailbox.receive)
        hub.publish(viewed(author))
        assert mailbox.full_since is None
        await trio.sleep(20)
        for _ in range(3):
            hub.publish(viewed(author))
        assert mailbox.close_reason is None


async def test_close_all_on_shutdown_closes_every_mailbox_with_1001(autojump_clock: trio.abc.Clock) -> None:
    hub = Hub(Metrics())
    shutdown = trio.Event()
    ended: list[CloseReason | None] = []

    async def socket(user_id: uuid.UUID) -> None:
        with hub.subscribe(user_id) as mailbox:
            async for _ in mailbox.receive:
                pass
            ended.append(mailbox.close_reason)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hub.close_all_on, shutdown)
            for user_id in (uuid.uuid4(), uuid.uuid4(), uuid.uuid4()):
                nursery.start_soon(socket, user_id)
            await trio.testing.wait_all_tasks_blocked()
            shutdown.set()
        assert ended == [CloseReason.SHUTDOWN] * 3
        assert CloseReason.SHUTDOWN.code == 1001
        with hub.subscribe(uuid.uuid4()) as late:
            assert late.close_reason is CloseReason.SHUTDOWN


async def test_a_mailbox_remembers_where_it_started_and_marks_a_gap() -> None:
    hub = Hub(Metrics(), mailbox_size=2)
    author = uuid.uuid4()
    with hub.subscribe(author) as before:
        assert before.start is None
        first = viewed(author)
        hub.publish(first)
        hub.advance(EventId(999, 0))  # behind: ignored
        assert hub.position == first.id
        with hub.subscribe(author) as after:
            assert after.start == first.id
        hub.publish(viewed(author))
        assert not before.take_gap()
        hub.publish(viewed(author))
        # The third did not fit: the handler learns of it once, and refills from the log.
        assert before.take_gap()
        assert not before.take_gap()
        hub.advance(EventId(2000, 0))
        assert hub.position == EventId(2000, 0)


async def test_an_eleventh_socket_of_a_user_closes_their_oldest_with_1008() -> None:
    hub = Hub(Metrics())
    author, other = uuid.uuid4(), uuid.uuid4()
    with ExitStack() as stack:
        bystander = stack.enter_context(hub.subscribe(other))
        mailboxes = [stack.enter_context(hub.subscribe(author)) for _ in range(10)]
        assert all(m.close_reason is None for m in mailboxes)
        eleventh = stack.enter_context(hub.subscribe(author))
        assert mailboxes[0].close_reason is CloseReason.TOO_MANY_SOCKETS
        assert CloseReason.TOO_MANY_SOCKETS.code == 1008
        assert all(m.close_reason is None for m in [*mailboxes[1:], eleventh, bystander])
        # The oldest still open goes next.
        stack.enter_context(hub.subscribe(author))
        assert mailboxes[1].close_reason is CloseReason.TOO_MANY_SOCKETS
        assert mailboxes[2].close_reason is None
    assert hub.stats().connections == 0
