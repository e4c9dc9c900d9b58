"""The hub's mailbox policy (pure mechanics, MockClock) and the events' encodings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
import trio

from stories.actors.hub import CloseReason, Hub
from stories.actors.messages import MalformedEvent, StoryReacted, StoryViewed, event_from_relay
from stories.metrics import Metrics

AT = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)


def viewed(author_id: uuid.UUID) -> StoryViewed:
    return StoryViewed(author_id=author_id, story_id=uuid.uuid4(), viewer_id=uuid.uuid4(), viewed_at=AT)


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None
    return value


def drain(receive: trio.MemoryReceiveChannel[str]) -> list[dict[str, object]]:
    items = []
    while True:
        try:
            items.append(orjson.loads(receive.receive_nowait()))
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
        author_id=uuid.uuid4(),
        story_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        emoji="🔥",
        created_at=AT,
        reaction_id=uuid.uuid4(),
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


def test_relay_record_round_trip_keeps_author_and_id() -> None:
    reacted = StoryReacted(
        author_id=uuid.uuid4(),
        story_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        emoji="❤️",
        created_at=AT,
        reaction_id=uuid.uuid4(),
    )
    for event in (viewed(uuid.uuid4()), reacted):
        assert event_from_relay(orjson.loads(orjson.dumps(event.relay_record()))) == event


@pytest.mark.parametrize(
    "record",
    [
        None,
        [],
        {},
        {"type": "story.deleted"},
        {"type": "story.viewed", "id": "x"},
        {**viewed(uuid.uuid4()).relay_record(), "viewed_at": "2026-11-24T10:00:00"},
        {**viewed(uuid.uuid4()).relay_record(), "author_id": 7},
    ],
)
def test_malformed_relay_records_are_refused(record: object) -> None:
    with pytest.raises(MalformedEvent):
        event_from_relay(record)


async def test_publish_reaches_every_socket_of_the_author_and_nobody_else() -> None:
    metrics = Metrics()
    hub = Hub(metrics)
    author, other = uuid.uuid4(), uuid.uuid4()
    with hub.subscribe(author) as first, hub.subscribe(author) as second, hub.subscribe(other) as bystander:
        assert sample(metrics, "ws_connections") == 3
        event = viewed(author)
        assert hub.publish(author, event) == 2
        assert [m["id"] for m in drain(first.receive)] == [str(event.id)]
        assert [m["id"] for m in drain(second.receive)] == [str(event.id)]
        assert drain(bystander.receive) == []
        assert hub.publish(uuid.uuid4(), viewed(author)) == 0
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
    assert hub.publish(author, viewed(author)) == 0
    with pytest.raises(trio.ClosedResourceError):
        mailbox.receive.receive_nowait()


async def test_full_mailbox_drops_and_counts_without_touching_others() -> None:
    metrics = Metrics()
    hub = Hub(metrics, mailbox_size=4, stall_seconds=10)
    author = uuid.uuid4()
    with hub.subscribe(author) as stalled, hub.subscribe(author) as reader:
        for _ in range(6):
            hub.publish(author, viewed(author))
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
            hub.publish(author, viewed(author))
            drain(reader.receive)
        assert stalled.full_since == trio.current_time()
        await trio.sleep(9.9)
        hub.publish(author, viewed(author))
        assert stalled.close_reason is None
        await trio.sleep(0.1)
        hub.publish(author, viewed(author))
        assert stalled.close_reason is CloseReason.SLOW_CLIENT
        # The closed mailbox still hands over what it holds, then ends.
        assert len([text async for text in stalled.receive]) == 2
        # The author's other socket, which kept reading, is untouched.
        assert reader.close_reason is None
        assert reader.dropped == 0
        assert len(drain(reader.receive)) == 2
        hub.publish(author, viewed(author))
        assert len(drain(reader.receive)) == 1


async def test_a_mailbox_that_catches_up_is_not_closed(autojump_clock: trio.abc.Clock) -> None:
    hub = Hub(Metrics(), mailbox_size=2, stall_seconds=10)
    author = uuid.uuid4()
    with trio.fail_after(60), hub.subscribe(author) as mailbox:
        for _ in range(3):
            hub.publish(author, viewed(author))
        assert mailbox.full_since is not None
        await trio.sleep(5)
        drain(mailbox.receive)
        hub.publish(author, viewed(author))
        assert mailbox.full_since is None
        await trio.sleep(20)
        for _ in range(3):
            hub.publish(author, viewed(author))
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


async def test_resync_closes_sockets_but_keeps_the_hub_open() -> None:
    hub = Hub(Metrics())
    author = uuid.uuid4()
    with hub.subscribe(author) as mailbox:
        assert hub.resync() == 1
        assert mailbox.close_reason is CloseReason.RESYNC
        assert CloseReason.RESYNC.code == 1012
        assert hub.publish(author, viewed(author)) == 0
    with hub.subscribe(author) as fresh:
        assert fresh.close_reason is None
        assert hub.publish(author, viewed(author)) == 1
