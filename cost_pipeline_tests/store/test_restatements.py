"""Protects restatements in `Warehouse.insert_new` on SQLite and Postgres: a stored key re-sent
with other raw content replaces the stored row and archives both versions; exact repeats and
callers that do not ask for restatements keep the first version."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pandas as pd

from cost_pipeline.catalog import INTERACTION_REVISIONS, LLM_INTERACTIONS, PRICED_INTERACTIONS
from cost_pipeline.lib.pricing import COST_COLUMNS
from cost_pipeline.lib.schemas import TOKEN_COLUMNS
from cost_pipeline.store.warehouse import Restatements, Warehouse

DAY = date(2026, 3, 1)
OTHER_DAY = date(2026, 3, 2)
REVISED_AT = datetime(2026, 3, 5, 12, tzinfo=UTC)
COMPARE = tuple(c for c in LLM_INTERACTIONS.column_names if c != "source_file")


def rows(ids: list[str], tokens: list[int], *, day: date = DAY, source: str = "a.jsonl"):
    return pd.DataFrame(
        {
            "event_id": ids,
            "occurred_at": datetime(day.year, day.month, day.day, 9, tzinfo=UTC),
            "day": day,
            "tenant_id": "acme",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "batch": False,
            **dict.fromkeys(TOKEN_COLUMNS, 0),
            "input_tokens": tokens,
            **dict.fromkeys(COST_COLUMNS, 0.0),
            "cost_usd": [t / 1000 for t in tokens],
            "pricing_status": "priced",
            "source_file": source,
        }
    )


def restatements() -> Restatements:
    return Restatements(into=INTERACTION_REVISIONS, compare=COMPARE, revised_at=REVISED_AT)


def load(wh: Warehouse, frame: pd.DataFrame, restate: Restatements | None) -> dict[str, int]:
    # One transaction per file, as the ingester does.
    with wh.transaction() as conn:
        return wh.insert_new(conn, PRICED_INTERACTIONS, [frame], restate=restate)


def test_a_later_version_replaces_the_stored_row_and_is_archived(warehouse: Warehouse) -> None:
    assert load(warehouse, rows(["e1", "e2", "e3"], [10, 20, 30]), restatements()) == {str(DAY): 3}
    # A later file: e1 exact repeat (other file name only), e2 restated, e4 new.
    restate = restatements()
    later = rows(["e1", "e2", "e4"], [10, 25, 40], source="b.jsonl")
    assert load(warehouse, later, restate) == {str(DAY): 1}
    assert restate.by_day == {str(DAY): 1}
    stored = warehouse.read(PRICED_INTERACTIONS).sort_values("event_id")
    assert stored["event_id"].tolist() == ["e1", "e2", "e3", "e4"]
    assert stored["input_tokens"].tolist() == [10, 25, 30, 40]
    assert stored["source_file"].tolist() == ["a.jsonl", "b.jsonl", "a.jsonl", "b.jsonl"]
    [revision] = warehouse.read(INTERACTION_REVISIONS).to_dict("records")
    assert (revision["event_id"], revision["day"]) == ("e2", DAY)
    assert revision["revised_at"] == REVISED_AT
    old, new = json.loads(revision["old_content"]), json.loads(revision["new_content"])
    assert (old["input_tokens"], new["input_tokens"]) == (20, 25)
    assert set(old) == set(COMPARE)
    assert old["occurred_at"] == new["occurred_at"] == "2026-03-01T09:00:00.000000Z"
    assert (old["day"], old["batch"]) == ("2026-03-01", False)
    assert (revision["old_cost_usd"], revision["new_cost_usd"]) == (0.02, 0.025)
    assert (revision["old_source_file"], revision["new_source_file"]) == ("a.jsonl", "b.jsonl")
    # The same later content once more: nothing new, nothing restated.
    again = restatements()
    assert load(warehouse, later, again) == {}
    assert again.by_day == {}
    assert warehouse.count(INTERACTION_REVISIONS) == 1


def test_restatements_are_counted_per_day_and_never_across_days(warehouse: Warehouse) -> None:
    first = pd.concat([rows(["a", "b"], [1, 2]), rows(["c"], [3], day=OTHER_DAY)])
    load(warehouse, first, restatements())
    restate = restatements()
    # "b" restated on its day; "a" re-sent on ANOTHER day is a new row there (out of scope).
    later = pd.concat([rows(["b"], [5]), rows(["c", "a"], [6, 7], day=OTHER_DAY)])
    assert load(warehouse, later, restate) == {str(OTHER_DAY): 1}
    assert restate.by_day == {str(DAY): 1, str(OTHER_DAY): 1}
    assert warehouse.count(PRICED_INTERACTIONS) == 4
    assert sorted(warehouse.read(INTERACTION_REVISIONS)["event_id"]) == ["b", "c"]


def test_without_restatements_the_first_version_is_kept(warehouse: Warehouse) -> None:
    load(warehouse, rows(["e1"], [10]), None)
    assert load(warehouse, rows(["e1"], [99], source="b.jsonl"), None) == {}
    assert warehouse.read(PRICED_INTERACTIONS)["input_tokens"].tolist() == [10]
    assert warehouse.count(INTERACTION_REVISIONS) == 0
