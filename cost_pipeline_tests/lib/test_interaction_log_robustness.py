"""Protects record-level isolation: no bad byte, number, type, line or file makes the reader raise
or lose a good record; each bad one is quarantined with its file, line and reason."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from pathlib import Path
from unittest import mock

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cost_pipeline.lib import log_text
from cost_pipeline.lib.interaction_log import GOOD_SCHEMA, iter_log_file, open_problem

PROVIDERS = frozenset({"openai", "anthropic"})
FIELDS = [
    "event_id",
    "occurred_at",
    "tenant_id",
    "provider",
    "model",
    "input_tokens",
    "cache_read_tokens",
    "output_tokens",
    "batch",
]


def read(path: Path, chunk_rows: int = 500_000) -> tuple[pa.Table, pd.DataFrame]:
    chunks = list(iter_log_file(path, known_providers=PROVIDERS, chunk_rows=chunk_rows))
    assert all(c.good.schema == GOOD_SCHEMA for c in chunks)
    good = pa.concat_tables([c.good for c in chunks]) if chunks else GOOD_SCHEMA.empty_table()
    quarantine = pd.concat([c.quarantine for c in chunks], ignore_index=True)
    return good, quarantine


def record(i: int, **fields) -> dict:
    return {
        "event_id": f"e{i}",
        "occurred_at": "2026-09-08T10:00:00Z",
        "tenant_id": "acme",
        "provider": "openai",
        "model": "gpt-4.1-mini",
        "input_tokens": 100 + i,
        "cache_read_tokens": 0,
        "output_tokens": 5,
        "batch": False,
        **fields,
    }


def test_one_invalid_utf8_line_is_quarantined_and_the_rest_of_the_file_loads(tmp_path) -> None:
    lines = [json.dumps(record(i)).encode() for i in range(5000)]
    lines[1234] = b'{"event_id": "t\xff\xfe01", "tenant_id": "acme"}'
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    good, quarantine = read(path)
    assert good.num_rows == 4999
    assert quarantine[["source_file", "line"]].values.tolist() == [["x.jsonl", 1235]]
    assert "not valid UTF-8" in quarantine["reason"].iloc[0]


def test_huge_and_binary_lines_are_quarantined_without_holding_them(tmp_path) -> None:
    huge = b'{"event_id": "' + b"x" * (3 << 20) + b'"}'
    junk = bytes(random.Random(1).randrange(256) for _ in range(5000)).replace(b"\n", b"")
    lines = [
        json.dumps(record(0)).encode(),
        huge,
        json.dumps(record(1)).encode(),
        junk,
        b"[1, 2]",
        b"   ",
        json.dumps(record(2)).encode(),
    ]
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\n".join(lines))  # and no line end at the end
    good, quarantine = read(path)
    assert good.column("event_id").to_pylist() == ["e0", "e1", "e2"]
    assert quarantine["line"].tolist() == [2, 4, 5]
    assert "longer than" in quarantine["reason"].iloc[0]
    assert len(quarantine["raw"].iloc[0]) <= 2000


def test_files_that_cannot_be_read_become_one_quarantine_row(tmp_path) -> None:
    junk_gz = tmp_path / "junk.jsonl.gz"
    junk_gz.write_bytes(b"this is not gzip at all" * 100)
    not_parquet = tmp_path / "fake.parquet"
    not_parquet.write_bytes(b"PAR1 but not really")
    missing = tmp_path / "missing.jsonl"
    for path in (junk_gz, not_parquet, missing):
        good, quarantine = read(path)
        assert good.num_rows == 0 and len(quarantine) == 1
        assert pd.isna(quarantine["line"].iloc[0]) and quarantine["reason"].iloc[0]
        assert len(open_problem(path)) == 1
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps(record(1)) + "\n")
    assert open_problem(ok).empty


def test_a_truncated_gzip_keeps_the_records_read_before_the_cut(tmp_path) -> None:
    data = gzip.compress(b"".join(json.dumps(record(i)).encode() + b"\n" for i in range(20000)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    good, quarantine = read(path)
    assert 1000 < good.num_rows < 20000
    assert good.column("event_id").to_pylist() == [f"e{i}" for i in range(good.num_rows)]
    last = quarantine.iloc[-1]
    assert "cannot be read past" in last["reason"] and last["line"] >= good.num_rows


# -- property: random garbage mixed with good records, over files and formats ------------------

GARBAGE = [
    "invalid_utf8",
    "overflow",
    "big_float",
    "nan",
    "wrong_type",
    "huge",
    "binary",
    "non_object",
    "negative",
    "no_usage",
]
TYPED_GARBAGE = ["overflow_typed", "negative", "no_usage"]  # what a Parquet column can hold


def good_record(rng: random.Random, i: int, f: int) -> dict:
    tokens = rng.randrange(0, 2_000_000)
    return {
        "event_id": f"f{f}-e{i}",
        "occurred_at": rng.choice(
            ["2026-09-08T10:00:00Z", "2026-09-08T23:59:59.5+02:00", "2026-09-07T01:00:00.123456z"]
        ),
        "tenant_id": rng.choice(["acme", " acme ", "globex"]),
        "provider": rng.choice(["openai", "OpenAI", "anthropic"]),
        "model": "some-model",
        "input_tokens": tokens,
        "cache_read_tokens": rng.randrange(0, tokens + 1),
        "output_tokens": rng.randrange(0, 50_000),
        "batch": rng.choice([True, False]),
    }


def bad_text(kind: str, rng: random.Random, base: dict, fmt: str) -> bytes:
    if kind == "invalid_utf8":
        return (json.dumps(base) if fmt != "csv" else csv_line(base)).encode()[:-3] + b"\xff\xfe"
    if kind == "binary":
        return b"\xff" + bytes(rng.randrange(256) for _ in range(300)).replace(b"\n", b"\r")
    if kind == "huge":
        return b'{"event_id": "' + b"z" * 5000 + b'"}' if fmt != "csv" else b"z," * 3000
    value = {
        "overflow": "99999999999999999999",
        "big_float": "1e20",
        "nan": "NaN",
        "wrong_type": '"many"',
        "negative": "-5",
        "non_object": None,
        "no_usage": None,
    }[kind]
    if kind == "non_object":
        return b"[1, 2, 3]" if fmt != "csv" else b"just one field"
    rec = dict(base)
    if kind == "no_usage":
        for k in ("input_tokens", "cache_read_tokens", "output_tokens"):
            del rec[k]
        return (csv_line(rec) if fmt == "csv" else json.dumps(rec)).encode()
    rec["output_tokens"] = 0
    if fmt == "csv":
        return csv_line({**rec, "output_tokens": value.strip('"')}).encode()
    return json.dumps(rec).replace('"output_tokens": 0', f'"output_tokens": {value}').encode()


def csv_line(rec: dict) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(
        [
            ""
            if rec.get(k) is None
            else str(rec[k]).lower()
            if isinstance(rec[k], bool)
            else rec[k]
            for k in FIELDS
        ]
    )
    return out.getvalue()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.lists(
        st.tuples(
            st.sampled_from(["jsonl", "jsonl.gz", "csv", "csv.gz", "parquet"]),
            st.lists(st.one_of(st.none(), st.sampled_from(GARBAGE)), min_size=1, max_size=40),
            st.integers(1, 50),
        ),
        min_size=1,
        max_size=4,
    ),
    seed=st.integers(0, 2**32),
)
def test_garbage_never_raises_and_every_record_is_loaded_or_quarantined_exactly(
    tmp_path_factory, files, seed
) -> None:
    rng = random.Random(seed)
    folder = tmp_path_factory.mktemp("logs")
    with mock.patch.object(log_text, "MAX_LINE_BYTES", 4096):
        for f, (fmt, kinds, chunk_rows) in enumerate(files):
            path = folder / f"log{f}.{fmt}"
            expected_good, expected_bad = write_file(path, fmt, kinds, rng, f)
            good, quarantine = read(path, chunk_rows)
            got = good.to_pylist()
            assert sorted(r["event_id"] for r in got) == sorted(expected_good)
            for row in got:
                want = expected_good[row["event_id"]]
                assert row["tenant_id"] == want["tenant_id"].strip()
                assert row["provider"] == want["provider"].lower()
                for k in ("input_tokens", "cache_read_tokens", "output_tokens", "batch"):
                    assert row[k] == want[k], k
                assert (
                    row["occurred_at"] == pd.Timestamp(want["occurred_at"].upper()).to_pydatetime()
                )
            assert set(quarantine["source_file"]) <= {path.name}
            assert sorted(quarantine["line"].tolist()) == sorted(expected_bad)
            assert quarantine["reason"].str.len().gt(0).all()


def write_file(
    path: Path, fmt: str, kinds: list[str | None], rng: random.Random, f: int
) -> tuple[dict[str, dict], list[int]]:
    good: dict[str, dict] = {}
    bad: list[int] = []
    if fmt == "parquet":
        rows = []
        for i, kind in enumerate(kinds):
            rec = good_record(rng, i, f)
            kind = kind and rng.choice(TYPED_GARBAGE)
            if kind is None:
                good[rec["event_id"]] = rec
            else:
                bad.append(i + 1)
                rec["output_tokens"] = {"overflow_typed": 10**17, "negative": -5}.get(kind)
                if kind == "no_usage":
                    rec["input_tokens"] = rec["cache_read_tokens"] = None
            rows.append(rec)
        pq.write_table(pa.Table.from_pylist(rows), path)
        return good, bad
    text = fmt.startswith("csv")
    lines = [",".join(FIELDS).encode()] if text else []
    for i, kind in enumerate(kinds):
        rec = good_record(rng, i, f)
        if kind is None:
            good[rec["event_id"]] = rec
            lines.append((csv_line(rec) if text else json.dumps(rec)).encode())
        else:
            lines.append(bad_text(kind, rng, rec, "csv" if text else "jsonl"))
        if kind is not None:
            bad.append(len(lines))
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
    return good, bad


def test_top_level_null_and_two_values_on_a_line_are_quarantined(tmp_path) -> None:
    # pyarrow's JSON reader crashes the process on a `null` line: it must never see one.
    path = tmp_path / "x.jsonl"
    lines = ["null", json.dumps(record(0)), f"{json.dumps(record(1))} null", " null", "5"]
    path.write_text("\n".join(lines) + "\n")
    good, quarantine = read(path)
    assert good.column("event_id").to_pylist() == ["e0"]
    assert quarantine["line"].tolist() == [1, 3, 4, 5]


KEYS = [
    "event_id",
    "occurred_at",
    "tenant_id",
    "provider",
    "model",
    "input_tokens",
    "usage",
    "attributes",
    "status",
    "batch",
    "latency_ms",
    "start_time",
    "id",
    "context",
]
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=6),
    st.sampled_from(["openai", "2026-09-08T10:00:00Z"]),
)
VALUE = st.recursive(
    LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from([*KEYS, "gen_ai.usage.input_tokens", "key", "value"]), inner, max_size=4
        ),
    ),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(
        st.one_of(st.dictionaries(st.sampled_from(KEYS), VALUE, max_size=8), VALUE),
        min_size=1,
        max_size=12,
    ),
    chunk_rows=st.sampled_from([1, 3, 100]),
)
def test_any_json_values_never_raise_and_each_line_is_accounted_for(
    tmp_path_factory, values, chunk_rows
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "x.jsonl"
    path.write_text("\n".join(json.dumps(v) for v in values) + "\n")
    good, quarantine = read(path, chunk_rows)
    assert good.num_rows + len(quarantine) == len(values)
    assert sorted(quarantine["line"].tolist()) == sorted(set(quarantine["line"].tolist()))
