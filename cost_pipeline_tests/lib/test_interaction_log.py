"""Protects the interaction-log reader: each format loads; each bad record is quarantined whole."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from cost_pipeline.catalog import LLM_INTERACTIONS, QUARANTINE
from cost_pipeline.demo.generator import DemoCompany
from cost_pipeline.lib.config import load_config
from cost_pipeline.lib.interaction_log import (
    GOOD_SCHEMA,
    LogChunk,
    file_digest,
    iter_log_file,
    log_format,
)

PROVIDERS = frozenset({"openai", "anthropic", "selfhosted"})
DAY = date(2026, 9, 8)


def good(event_id: str = "e1", **fields) -> dict:
    record = {
        "event_id": event_id,
        "occurred_at": "2026-09-08T10:00:00.250Z",
        "tenant_id": "acme",
        "user_id": "acme-u001",
        "agent_id": "support-bot",
        "provider": "openai",
        "model": "gpt-4.1-mini",
        "batch": False,
        "input_tokens": 1000,
        "cache_read_tokens": 256,
        "output_tokens": 120,
        "latency_ms": 800,
        "status": "ok",
    }
    record.update(fields)
    return {k: v for k, v in record.items() if v is not ...}


def read_all(path: Path, chunk_rows: int = 500_000) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    chunks: list[LogChunk] = list(
        iter_log_file(path, known_providers=PROVIDERS, chunk_rows=chunk_rows)
    )
    for c in chunks:
        assert c.good.schema == GOOD_SCHEMA
    goods = LLM_INTERACTIONS.conform(
        pa.concat_tables([c.good for c in chunks]).to_pandas(coerce_temporal_nanoseconds=True)
    )
    quarantine = pd.concat([c.quarantine for c in chunks], ignore_index=True)
    return goods, quarantine, sum(c.duplicates for c in chunks)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def company() -> DemoCompany:
    return DemoCompany(load_config(), seed=3)


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv", "csv.gz", "parquet"])
def test_each_format_loads_the_generated_day_exactly(tmp_path, company, fmt) -> None:
    company.write_log(tmp_path, start=DAY, days=1, events_per_day=300, fmt=fmt, late_fraction=0)
    path = tmp_path / f"interactions-{DAY}.{fmt}"
    loaded, quarantine, duplicates = read_all(path)
    assert quarantine.empty and duplicates == 0
    expected = LLM_INTERACTIONS.conform(company.events_for_day(DAY, 300))
    assert set(loaded["source_file"]) == {path.name}
    pd.testing.assert_frame_equal(
        loaded.drop(columns="source_file"), expected.drop(columns="source_file")
    )


def test_ndjson_and_plain_gzip_are_recognized(tmp_path) -> None:
    plain = write_lines(tmp_path / "a.ndjson", [json.dumps(good())])
    zipped = tmp_path / "b.ndjson.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    assert len(read_all(plain)[0]) == len(read_all(zipped)[0]) == 1
    assert log_format("x.NDJSON.gz") == "jsonl"
    with pytest.raises(ValueError, match="not an interaction log"):
        log_format("x.txt")


BAD_RECORDS = [
    ('{"event_id": "b1", "tenant_id": ', "not valid JSON"),
    ("[1, 2, 3]", "not an object (got list)"),
    ('"just a string"', "not an object (got str)"),
    (json.dumps(good(event_id=...)), "event_id is missing"),
    (json.dumps(good("")), "event_id is missing or empty"),
    (json.dumps(good("b3", tenant_id="  ")), "tenant_id is missing or empty"),
    (json.dumps(good("b4", provider=None)), "provider is missing"),
    (json.dumps(good("b5", model=...)), "model is missing"),
    (json.dumps(good("b6", occurred_at="next tuesday")), "occurred_at 'next tuesday' is not"),
    (json.dumps(good("b7", occurred_at="2026-09-08T10:00:00")), "with a UTC offset"),
    (json.dumps(good("b8", occurred_at=...)), "occurred_at is missing"),
    (json.dumps(good("b9", output_tokens=-4)), "output_tokens is negative: -4"),
    (json.dumps(good("b10", input_tokens=10.5)), "input_tokens is not an integer: 10.5"),
    (json.dumps(good("b11", reasoning_tokens="many")), "reasoning_tokens is not an integer"),
    (json.dumps(good("b12", cache_write_tokens=True)), "cache_write_tokens is not an integer"),
    (
        json.dumps(good("b13", input_tokens=100, cache_read_tokens=80, cache_write_tokens=30)),
        "input_tokens (100) is smaller than cache_read_tokens + cache_write_tokens",
    ),
    (json.dumps(good("b14", provider="mystery-ai")), "provider 'mystery-ai' is unknown"),
    (json.dumps(good("b15", latency_ms=-1)), "latency_ms is negative"),
    (json.dumps(good("b16", batch="sometimes")), "batch is not true or false"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_RECORDS, ids=[r for _, r in BAD_RECORDS])
def test_a_bad_record_is_quarantined_whole_and_its_neighbours_load(tmp_path, line, reason) -> None:
    path = write_lines(
        tmp_path / "log.jsonl", [json.dumps(good("ok1")), line, json.dumps(good("ok2"))]
    )
    loaded, quarantine, _ = read_all(path)
    assert list(loaded["event_id"]) == ["ok1", "ok2"]
    assert len(quarantine) == 1
    row = quarantine.iloc[0]
    assert row["raw"] == line
    assert reason in row["reason"]
    assert row["source"] == "llm_interactions"
    QUARANTINE.conform(quarantine)


def test_several_problems_are_all_named_and_day_is_kept_when_known(tmp_path) -> None:
    line = json.dumps(good("x", tenant_id="", output_tokens=-1, provider="nope"))
    _, quarantine, _ = read_all(write_lines(tmp_path / "log.jsonl", [line]))
    reason = quarantine.iloc[0]["reason"]
    assert "tenant_id is missing" in reason and "output_tokens is negative" in reason
    assert "provider 'nope' is unknown" in reason
    assert quarantine.iloc[0]["day"] == DAY
    _, unparsed, _ = read_all(write_lines(tmp_path / "b.jsonl", ["{oops"]))
    assert unparsed.iloc[0]["day"] is None


def test_missing_token_fields_mean_zero_and_day_is_the_utc_date(tmp_path) -> None:
    record = good("late", occurred_at="2026-09-08T22:30:00-05:00")
    for name in ("cache_read_tokens", "output_tokens", "latency_ms", "batch"):
        del record[name]
    loaded, _, _ = read_all(write_lines(tmp_path / "log.jsonl", [json.dumps(record)]))
    row = loaded.iloc[0]
    assert row["day"] == date(2026, 9, 9)
    assert row["occurred_at"] == pd.Timestamp("2026-09-09T03:30:00Z")
    assert row["output_tokens"] == 0 and row["cache_read_tokens"] == 0
    assert pd.isna(row["latency_ms"]) and pd.isna(row["batch"])


def test_bad_csv_rows_are_quarantined_with_the_original_line(tmp_path) -> None:
    header = "event_id,occurred_at,tenant_id,provider,model,input_tokens,output_tokens"
    lines = [
        header,
        "c1,2026-09-08T10:00:00Z,acme,openai,gpt-4.1,100,10",
        "c2,2026-09-08T10:00:00Z,acme,openai",
        "c3,2026-09-08T10:00:00Z,acme,openai,gpt-4.1,100,10,extra",
        "c4,2026-09-08T10:00:00Z,,openai,gpt-4.1,-100,10",
        'c5,2026-09-08T10:00:00Z,"acme, inc",openai,gpt-4.1,100,10',
    ]
    loaded, quarantine, _ = read_all(write_lines(tmp_path / "log.csv", lines))
    assert list(loaded["event_id"]) == ["c1", "c5"]
    assert loaded["tenant_id"].tolist() == ["acme", "acme, inc"]
    by_raw = dict(zip(quarantine["raw"], quarantine["reason"], strict=True))
    assert "has 4 field(s) where the header has 7" in by_raw[lines[2]]
    assert "has 8 field(s)" in by_raw[lines[3]]
    assert "tenant_id is missing" in by_raw[lines[4]]
    assert "input_tokens is negative: -100" in by_raw[lines[4]]


def loaded_after_upserts(path: Path, chunk_rows: int) -> tuple[pd.DataFrame, int, int]:
    """What the loader ends with: rows upserted by event_id in chunk order (last wins)."""
    chunks = list(iter_log_file(path, known_providers=PROVIDERS, chunk_rows=chunk_rows))
    seen: set[str] = set()
    for c in chunks:
        ids = c.good.column("event_id").to_pylist()
        # `replaces_earlier` names exactly the ids of this chunk that an earlier chunk yielded.
        assert set(c.replaces_earlier.to_pylist()) == seen & set(ids)
        seen |= set(ids)
    goods = pa.concat_tables([c.good for c in chunks]).to_pandas(coerce_temporal_nanoseconds=True)
    goods = goods.drop_duplicates("event_id", keep="last").sort_values("event_id")
    duplicates = sum(c.duplicates for c in chunks)
    return goods.reset_index(drop=True), duplicates, sum(c.restated_in_file for c in chunks)


def test_in_file_restatements_keep_the_last_version_and_chunking_changes_nothing(
    tmp_path,
) -> None:
    lines = [json.dumps(good(f"e{i % 7}", input_tokens=1000 + i)) for i in range(20)]
    lines.insert(5, "{broken")
    lines.insert(11, json.dumps(good("e3", provider="nope")))
    lines += lines[-3:]  # exact copies: duplicates, not corrections
    path = write_lines(tmp_path / "log.jsonl", lines)
    whole, quarantine, duplicates = read_all(path)
    chunks = list(iter_log_file(path, known_providers=PROVIDERS))
    assert len(whole) == 7 and duplicates == 3 and len(quarantine) == 2
    assert sum(c.restated_in_file for c in chunks) == 13
    by_id = dict(zip(whole["event_id"], whole["input_tokens"], strict=True))
    assert by_id == {f"e{j}": 1000 + (14 + j if j < 6 else 13) for j in range(7)}  # last kept
    expected = loaded_after_upserts(path, 500_000)
    for chunk_rows in (1, 3, 8):
        got = loaded_after_upserts(path, chunk_rows)
        pd.testing.assert_frame_equal(got[0], expected[0])
        assert got[1:] == (3, 13)
        parts = read_all(path, chunk_rows=chunk_rows)[1]
        key = ["line", "raw", "reason"]
        pd.testing.assert_frame_equal(
            parts[key].sort_values("line", ignore_index=True),
            quarantine[key].sort_values("line", ignore_index=True),
        )


def test_file_digest_is_the_sha256_of_the_content(tmp_path) -> None:
    a = write_lines(tmp_path / "a.jsonl", [json.dumps(good())] * 3)
    b = tmp_path / "renamed.jsonl"
    b.write_bytes(a.read_bytes())
    expected = hashlib.sha256(a.read_bytes()).hexdigest()
    assert file_digest(a) == file_digest(b, block_size=7) == expected
    write_lines(b, [json.dumps(good("other"))])
    assert file_digest(b) != expected
