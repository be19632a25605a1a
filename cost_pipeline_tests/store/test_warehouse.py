"""Protects the warehouse contract on SQLite and Postgres: atomic, idempotent partition writes."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from cost_pipeline.catalog import (
    DAILY_COST_SUMMARY,
    LLM_INTERACTIONS,
    PRICED_INTERACTIONS,
    QUARANTINE,
)
from cost_pipeline.lib.pricing import COST_COLUMNS
from cost_pipeline.lib.schemas import TOKEN_COLUMNS, SchemaError, TableSchema, col
from cost_pipeline.store.warehouse import Warehouse, redact_url
from cost_pipeline_tests.conftest import throwaway_postgres_database

DAY = date(2026, 3, 1)


def summary_rows(day: date, n: int, cost: float = 0.123456789123) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "day": [day] * n,
            "tenant_id": [f"t{i % 3}" for i in range(n)],
            "cost_category": ["llm"] * n,
            "provider": ["openai"] * n,
            "model_or_service": ["gpt-4o-mini"] * n,
            "agent_id": [None] * n,
            "requests": [1] * n,
            "input_tokens": [10] * n,
            "output_tokens": [5] * n,
            "cost_usd": [cost] * n,
            "unpriced_requests": [0] * n,
        }
    )


def test_replace_partition_is_idempotent(warehouse: Warehouse) -> None:
    for _ in range(3):
        warehouse.replace_partition(DAILY_COST_SUMMARY, DAY, summary_rows(DAY, 10))
    warehouse.replace_partition(
        DAILY_COST_SUMMARY, DAY.replace(day=2), summary_rows(DAY.replace(day=2), 4)
    )
    assert warehouse.count(DAILY_COST_SUMMARY, days=[DAY]) == 10
    assert warehouse.count(DAILY_COST_SUMMARY) == 14


def test_replace_touches_only_its_own_day(warehouse: Warehouse) -> None:
    other = date(2026, 3, 2)
    warehouse.replace_partition(DAILY_COST_SUMMARY, other, summary_rows(other, 5))
    warehouse.replace_partition(DAILY_COST_SUMMARY, DAY, summary_rows(DAY, 7))
    warehouse.replace_partition(DAILY_COST_SUMMARY, DAY, summary_rows(DAY, 2))
    assert warehouse.count(DAILY_COST_SUMMARY, days=[other]) == 5
    assert warehouse.count(DAILY_COST_SUMMARY, days=[DAY]) == 2


def test_rows_outside_the_partition_are_refused(warehouse: Warehouse) -> None:
    with pytest.raises(ValueError, match="outside partition"):
        warehouse.replace_partition(DAILY_COST_SUMMARY, DAY, summary_rows(date(2026, 3, 9), 1))


def test_failed_write_leaves_the_previous_partition(warehouse: Warehouse) -> None:
    warehouse.replace_partition(DAILY_COST_SUMMARY, DAY, summary_rows(DAY, 3))
    bad = summary_rows(DAY, 3)
    bad.loc[1, "requests"] = -1
    with pytest.raises(SchemaError, match="requests"):
        warehouse.replace_partition(DAILY_COST_SUMMARY, DAY, bad)
    assert warehouse.count(DAILY_COST_SUMMARY, days=[DAY]) == 3


def test_money_round_trips_to_nano_usd(warehouse: Warehouse) -> None:
    warehouse.replace_partition(DAILY_COST_SUMMARY, DAY, summary_rows(DAY, 1, cost=1234.123456789))
    out = warehouse.read(DAILY_COST_SUMMARY, days=[DAY])
    assert out["cost_usd"].iloc[0] == pytest.approx(1234.123456789, abs=1e-9)
    assert out["day"].iloc[0] == DAY


def test_concurrent_runs_of_one_day_leave_one_copy(warehouse_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        wh = Warehouse(warehouse_url)
        try:
            for _ in range(5):
                wh.replace_partition(DAILY_COST_SUMMARY, DAY, summary_rows(DAY, 500))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            wh.dispose()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert Warehouse(warehouse_url).count(DAILY_COST_SUMMARY, days=[DAY]) == 500


def test_runs_that_first_migrate_a_fresh_warehouse_at_once_all_succeed(
    db_engine: str, tmp_path: Path
) -> None:
    # Parallel runs on a new database each migrate it at their start, at the same time.
    with contextlib.ExitStack() as stack:
        if db_engine == "sqlite":
            url = f"sqlite:///{tmp_path / 'fresh.db'}"
        else:
            url = stack.enter_context(throwaway_postgres_database())
        _migrate_concurrently(url)
        wh = Warehouse(url)
        assert wh.count(LLM_INTERACTIONS) == 0
        assert wh.migrate() == []  # a second migration finds nothing to do
        wh.dispose()


def _migrate_concurrently(warehouse_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run() -> None:
        wh = Warehouse(warehouse_url)
        try:
            start.wait()
            wh.migrate()
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            wh.dispose()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_strings_with_separators_and_nulls_survive_bulk_load(warehouse: Warehouse) -> None:
    ts = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)
    row = {
        "event_id": 'ev,1 "quoted"\nnewline',
        "occurred_at": ts,
        "day": DAY,
        "tenant_id": "acme",
        "user_id": None,
        "agent_id": "",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "batch": True,
        "input_tokens": 10,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cache_write_1h_tokens": 0,
        "output_tokens": 3,
        "reasoning_tokens": 0,
        "web_search_requests": 0,
        "latency_ms": None,
        **dict.fromkeys(COST_COLUMNS, 0.0),
        "cost_usd": 0.0,
        "pricing_status": "priced",
    }
    # Written where calls are stored, read back through the raw-column view.
    warehouse.replace_partition(PRICED_INTERACTIONS, DAY, pd.DataFrame([row]))
    out = warehouse.read(LLM_INTERACTIONS, days=[DAY]).iloc[0]
    assert out["event_id"] == row["event_id"]
    assert out["occurred_at"] == pd.Timestamp(ts)
    assert out["user_id"] is None
    assert bool(out["batch"]) is True
    assert pd.isna(out["latency_ms"])


def interaction_rows(event_ids: list[str], tokens: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": event_ids,
            "occurred_at": datetime(2026, 3, 1, 9, tzinfo=UTC),
            "day": DAY,
            "tenant_id": "acme",
            "provider": "openai",
            "model": "gpt-4o-mini",
            **dict.fromkeys(TOKEN_COLUMNS, 0),
            "input_tokens": tokens,
            **dict.fromkeys((*COST_COLUMNS, "cost_usd"), 0.0),
            "pricing_status": "priced",
        }
    )


def test_text_that_looks_like_the_copy_null_marker_is_kept(warehouse: Warehouse) -> None:
    # Quarantine keeps bad input whole: a raw line `\N` (Postgres' COPY null marker), tabs,
    # carriage returns and backslashes must come back byte for byte, and '' must stay ''.
    raws = ["\\N", "\\", "a\tb\r\nc", "C:\\dir\\N", "", '"quoted", \\N']
    warehouse.append(
        QUARANTINE,
        pd.DataFrame(
            {
                "source": "llm_interactions",
                "day": DAY,
                "raw": raws,
                "reason": [f"r{i}" for i in range(len(raws))],
                "detected_at": datetime(2026, 3, 1, tzinfo=UTC),
            }
        ),
    )
    out = warehouse.read(QUARANTINE).sort_values("reason")
    assert out["raw"].tolist() == raws


def test_insert_new_keeps_the_first_occurrence_of_a_repeated_key(warehouse: Warehouse) -> None:
    # 12 events stored, then delivered twice more with other payloads (once repeated within the
    # chunk): the first delivery wins on every engine and the later ones add nothing.
    ids = [f"ev{i % 12:02d}" for i in range(36)]
    with warehouse.transaction() as conn:
        new = warehouse.insert_new(
            conn, PRICED_INTERACTIONS, [interaction_rows(ids[:12], list(range(12)))]
        )
        new2 = warehouse.insert_new(
            conn, PRICED_INTERACTIONS, [interaction_rows(ids[12:], list(range(12, 36)))]
        )
    assert (new, new2) == ({str(DAY): 12}, {})
    out = warehouse.read(LLM_INTERACTIONS).sort_values("event_id")
    assert out["input_tokens"].tolist() == list(range(12))


def test_insert_new_counts_composite_keys_of_any_type(warehouse: Warehouse) -> None:
    schema = TableSchema(
        name="composite_keys",
        columns=(
            col("day", "date", nullable=False),
            col("a", "str", nullable=False),
            col("b", "str", nullable=False),
            col("n", "int", nullable=False),
        ),
        partition_column="day",
        unique=("a", "b", "n"),
    )
    # ('a', 'bc') and ('ab', 'c') are different keys even though their texts concatenate alike.
    rows = pd.DataFrame({"day": DAY, "a": ["a", "ab", "ab"], "b": ["bc", "c", "c"], "n": [1, 1, 2]})
    warehouse.migrate(schemas=[schema])
    with warehouse.transaction() as conn:
        assert warehouse.insert_new(conn, schema, [rows]) == {str(DAY): 3}
        assert warehouse.insert_new(conn, schema, [rows]) == {}
    assert warehouse.count(schema) == 3


def test_chunked_reads_equal_one_read(warehouse: Warehouse) -> None:
    warehouse.replace_partition(DAILY_COST_SUMMARY, DAY, summary_rows(DAY, 25))
    chunks = list(warehouse.read_chunks(DAILY_COST_SUMMARY, days=[DAY], chunk_rows=7))
    assert [len(c) for c in chunks] == [7, 7, 7, 4]
    assert pd.concat(chunks)["cost_usd"].sum() == pytest.approx(25 * 0.123456789, abs=1e-9)


def test_redacted_url_hides_the_password() -> None:
    assert "s3cret" not in redact_url("postgresql+psycopg2://u:s3cret@db:5432/costs")


def test_migrate_remakes_a_view_made_before_its_table_gained_columns(
    warehouse: Warehouse,
) -> None:
    warehouse.migrate()
    with warehouse.engine.begin() as conn:
        conn.exec_driver_sql("DROP VIEW llm_interactions")
        conn.exec_driver_sql(
            "CREATE VIEW llm_interactions AS SELECT event_id, day FROM priced_interactions"
        )
    assert "re-created view llm_interactions" in warehouse.migrate()
    assert not any("view" in change for change in warehouse.migrate())
    columns = warehouse.query("SELECT * FROM llm_interactions WHERE 1 = 0").columns
    assert list(columns) == LLM_INTERACTIONS.column_names


def test_days_outside_the_migrated_partitions_are_written_not_refused(
    warehouse: Warehouse,
) -> None:
    """`migrate` makes Postgres day partitions from a year back to a week ahead of its own
    day; a backfill of an older day, or rows stamped after that week, get their partition when
    they are written (replace, append, insert_new), instead of a missing-relation error."""
    old, ahead = date(2019, 2, 28), date(2031, 1, 1)
    warehouse.replace_partition(DAILY_COST_SUMMARY, old, summary_rows(old, 3))
    warehouse.replace_partition(DAILY_COST_SUMMARY, old, summary_rows(old, 2))
    warehouse.append(DAILY_COST_SUMMARY, summary_rows(ahead, 4))
    rows = interaction_rows(["late-1", "late-2"], [5, 6]).assign(
        day=ahead, occurred_at=datetime(2031, 1, 1, 9, tzinfo=UTC)
    )
    with warehouse.transaction() as conn:
        assert warehouse.insert_new(conn, PRICED_INTERACTIONS, [rows]) == {str(ahead): 2}
    assert warehouse.count(DAILY_COST_SUMMARY, days=[old]) == 2
    assert warehouse.count(DAILY_COST_SUMMARY, days=[ahead]) == 4
    assert warehouse.count(PRICED_INTERACTIONS, days=[ahead]) == 2
