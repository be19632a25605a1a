"""Writing the demo company's interaction log as the app would drop it in the landing folder.

One file per UTC day (`interactions-YYYY-MM-DD.<fmt>`), written in chunks so a day of millions
of calls never exists as one string. A small share of each day's calls is delivered late, in the
next day's file (and the day after the last holds only those). With `garbage_fraction`, that many
malformed lines are added per file (bad JSON or a short CSV row, missing tenant, negative tokens,
bad timestamp, unknown provider) beside the real calls, so every generated call stays loadable
and the summary says exactly how many lines of each kind should be quarantined.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cost_pipeline.catalog import LLM_INTERACTIONS
from cost_pipeline.catalog.ledger import CALL_UNITS
from cost_pipeline.lib.schemas import TOKEN_COLUMNS

if TYPE_CHECKING:
    from cost_pipeline.demo.generator import DemoCompany

FORMATS = ("jsonl.gz", "jsonl", "csv", "csv.gz", "parquet")
GARBAGE_KINDS = (
    "bad_json",
    "missing_tenant",
    "negative_tokens",
    "bad_timestamp",
    "unknown_provider",
)
# The demo's calls are priced by tokens: the unit columns (`CALL_UNITS`) are not logged.
LOG_FIELDS = [
    c
    for c in LLM_INTERACTIONS.column_names
    if c not in ("day", "source_file", *(u.name for u in CALL_UNITS))
]
UNKNOWN_PROVIDER = "mystery-ai"
CHUNK_ROWS = 200_000
PARQUET_TYPES = {
    "batch": pa.bool_(),
    "latency_ms": pa.int64(),
    **{name: pa.int64() for name in TOKEN_COLUMNS},
}


@dataclass
class WriteSummary:
    """What `write_log` wrote: files, calls, late deliveries and malformed lines by kind."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    events: int = 0
    late_events: int = 0
    garbage_lines: int = 0
    garbage_by_kind: dict[str, int] = field(default_factory=dict)
    incidents: int = 0

    def __str__(self) -> str:
        return (
            f"{len(self.files)} file(s), {self.events:,} calls ({self.late_events:,} delivered a "
            f"day late), {self.garbage_lines:,} malformed line(s), {self.incidents} incident(s) "
            f"in {self.out_dir}"
        )


def write_log(
    company: DemoCompany,
    out_dir: Path,
    *,
    start: date,
    days: int,
    events_per_day: int,
    fmt: str = "jsonl.gz",
    garbage_fraction: float = 0.0,
    late_fraction: float = 0.002,
) -> WriteSummary:
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if not 0 <= garbage_fraction < 1 or not 0 <= late_fraction < 1:
        raise ValueError("garbage_fraction and late_fraction must be in [0, 1)")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = WriteSummary(out_dir=out_dir)
    kinds: Counter[str] = Counter()
    carried = pd.DataFrame(columns=LOG_FIELDS)
    for i in range(days + 1):
        day = start + timedelta(days=i)
        if i < days:
            events = company.events_for_day(day, events_per_day)
            rng = np.random.default_rng([company.seed, day.toordinal(), 4])
            late = rng.random(len(events)) < late_fraction
            summary.events += len(events)
            summary.late_events += int(late.sum())
            today, tomorrow = events[~late], events[late]
        elif carried.empty:
            break
        else:
            today, tomorrow = carried.iloc[:0], carried.iloc[:0]
        rows = _log_rows(pd.concat([carried, today]) if len(carried) else today)
        rng = np.random.default_rng([company.seed, day.toordinal(), 5])
        rows, garbage = _with_garbage(rng, rows, garbage_fraction, fmt)
        kinds.update(garbage.dropna())
        path = out_dir / f"interactions-{day.isoformat()}.{fmt}"
        _write(path, fmt, rows, garbage)
        summary.files.append(path)
        carried = tomorrow
    incidents = company.incidents(start, days)
    (out_dir / "incidents.json").write_text(json.dumps(incidents, indent=2) + "\n")
    summary.incidents = len(incidents)
    summary.garbage_by_kind = {k: kinds.get(k, 0) for k in GARBAGE_KINDS}
    summary.garbage_lines = sum(kinds.values())
    return summary


def _log_rows(events: pd.DataFrame) -> pd.DataFrame:
    """The fields the app logs, timestamps as RFC 3339 text in UTC with milliseconds."""
    rows = events[LOG_FIELDS].reset_index(drop=True)
    stamps = pd.to_datetime(rows["occurred_at"], utc=True).dt.tz_localize(None)
    text = np.datetime_as_string(stamps.to_numpy().astype("datetime64[ms]"), unit="ms")
    rows["occurred_at"] = np.char.add(text, "Z").astype(object)
    return rows


def _with_garbage(
    rng: np.random.Generator, rows: pd.DataFrame, fraction: float, fmt: str
) -> tuple[pd.DataFrame, pd.Series]:
    """`rows` with malformed copies inserted at random places, and each line's garbage kind."""
    count = round(len(rows) * fraction) if len(rows) else 0
    if count == 0:
        return rows, pd.Series(None, index=rows.index, dtype=object)
    allowed = GARBAGE_KINDS[1:] if fmt == "parquet" else GARBAGE_KINDS  # no text to break
    bad = rows.iloc[rng.integers(len(rows), size=count)].reset_index(drop=True)
    kind = np.array(allowed, dtype=object)[rng.integers(len(allowed), size=count)]
    bad.loc[kind == "missing_tenant", "tenant_id"] = None
    negative = kind == "negative_tokens"
    bad.loc[negative, "output_tokens"] = -(bad.loc[negative, "output_tokens"] + 1)
    bad.loc[kind == "bad_timestamp", "occurred_at"] = "2026-13-45T25:61:00Z"
    bad.loc[kind == "unknown_provider", "provider"] = UNKNOWN_PROVIDER
    total = len(rows) + count
    slots = np.zeros(total, dtype=bool)
    slots[rng.choice(total, size=count, replace=False)] = True
    order = np.empty(total, dtype=np.int64)
    order[~slots] = np.arange(len(rows))
    order[slots] = len(rows) + np.arange(count)
    combined = pd.concat([rows, bad], ignore_index=True).iloc[order].reset_index(drop=True)
    kinds = np.full(total, None, dtype=object)
    kinds[slots] = kind
    return combined, pd.Series(kinds)


def _write(path: Path, fmt: str, rows: pd.DataFrame, garbage: pd.Series) -> None:
    if fmt == "parquet":
        _write_parquet(path, rows)
        return
    if fmt.endswith(".gz"):
        with gzip.open(path, "wb", compresslevel=3) as fh:
            _write_text(fh, fmt, rows, garbage)
    else:
        with open(path, "wb") as fh:
            _write_text(fh, fmt, rows, garbage)


def _write_text(fh: BinaryIO, fmt: str, rows: pd.DataFrame, garbage: pd.Series) -> None:
    csv = fmt.startswith("csv")
    if csv:
        fh.write(",".join(LOG_FIELDS).encode() + b"\n")
    for lo in range(0, len(rows), CHUNK_ROWS):
        chunk = rows.iloc[lo : lo + CHUNK_ROWS]
        if csv:
            text = chunk.to_csv(index=False, header=False, lineterminator="\n")
        else:
            text = chunk.to_json(orient="records", lines=True)
        lines = text.rstrip("\n").split("\n")
        for pos in np.flatnonzero((garbage.iloc[lo : lo + CHUNK_ROWS] == "bad_json").to_numpy()):
            lines[pos] = lines[pos][: len(lines[pos]) // 2]  # cut mid-record: not parseable
        fh.write(("\n".join(lines) + "\n").encode())


def _write_parquet(path: Path, rows: pd.DataFrame) -> None:
    schema = pa.schema(
        [pa.field(name, PARQUET_TYPES.get(name, pa.string())) for name in LOG_FIELDS]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for lo in range(0, max(len(rows), 1), CHUNK_ROWS):
            chunk = rows.iloc[lo : lo + CHUNK_ROWS]
            writer.write_table(pa.Table.from_pandas(chunk, schema=schema, preserve_index=False))
