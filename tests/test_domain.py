"""stories/domain.py is the one home of the service's facts; where the schema must repeat one, they agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stories.domain import EMOJI_ALIASES, REACTION_EMOJIS, EventId, MalformedEventId

ROOT = Path(__file__).resolve().parent.parent


def test_the_schema_checks_the_same_emoji_the_service_accepts() -> None:
    schema = (ROOT / "schema" / "0004_views_reactions.sql").read_text()
    check = re.search(r"CHECK \(emoji IN \(([^)]*)\)\)", schema)
    assert check is not None
    assert tuple(re.findall(r"'([^']*)'", check.group(1))) == REACTION_EMOJIS


def test_an_alias_names_an_accepted_emoji() -> None:
    assert set(EMOJI_ALIASES.values()) <= set(REACTION_EMOJIS)


def test_an_event_id_reads_back_as_written_and_orders_as_its_text() -> None:
    ids = [EventId(1, 2), EventId(1, 10), EventId(2**40, 0)]
    assert [EventId.parse(str(i)) for i in ids] == ids
    assert sorted(str(i) for i in ids) == [str(i) for i in sorted(ids)]


@pytest.mark.parametrize("text", ["", "0" * 31, "G" * 32, "0" * 16 + "8" + "0" * 15])
def test_a_malformed_event_id_is_refused(text: str) -> None:
    with pytest.raises(MalformedEventId):
        EventId.parse(text)
