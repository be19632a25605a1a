"""Reading FOCUS files without ever raising: the records, plus what could not be read.

CSV (plain or gzipped) is read as text, so decimals keep their digits; Parquet as typed, row
group by row group. A record that cannot be read (wrong number of fields, bytes that are not
UTF-8) becomes one `quarantine` row with its line and raw text; a file that cannot be opened at
all (junk or truncated gzip, not a Parquet file, no header) becomes exactly one `quarantine` row
with no line, and none of its records load: a half-read file would silently replace a complete
earlier delivery.

`line` is the record's number in the file counting the header as 1 (the physical line unless a
quoted value spans lines); for Parquet it is the 1-based row number.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from cost_pipeline.catalog import QUARANTINE

SOURCE = "cloud_costs"
FOCUS_SUFFIXES = (".csv", ".csv.gz", ".parquet")
RAW_MAX_CHARS = 2000
# FOCUS 1.3 names -> the 1.0-1.2 names the normalizer works with.
RENAMES = {"ServiceProviderName": "ProviderName", "HostProviderName": "PublisherName"}
_GZIP_ERRORS = (OSError, EOFError, zlib.error)


@dataclass(frozen=True)
class FocusFile:
    """One file as read: its records, their line numbers, and its quarantine rows."""

    records: pd.DataFrame  # as read, 1.3 names renamed; CSV values as text
    lines: pd.Series  # int64 line (CSV) or row number (Parquet) of each record
    quarantine: pd.DataFrame  # QUARANTINE rows: unreadable records, or the whole file
    error: str | None = None  # why the file could not be opened at all, if it could not


def is_focus_file(path: Path) -> bool:
    return path.name.lower().endswith(FOCUS_SUFFIXES)


def bounded(text: str) -> str:
    """`text` cut to RAW_MAX_CHARS, saying so when it was cut."""
    if len(text) <= RAW_MAX_CHARS:
        return text
    marker = f"...[{len(text) - RAW_MAX_CHARS + 40:,} more chars]"
    return text[: RAW_MAX_CHARS - len(marker)] + marker


def quarantine_frame(
    *,
    source_file: str,
    detected_at: datetime,
    raw: Iterable[str],
    reasons: Iterable[str],
    lines: Iterable[int | None],
    days: Iterable[object] | None = None,
) -> pd.DataFrame:
    """QUARANTINE rows of `source_file`; each reason is prefixed with the file's name."""
    raw, reasons, lines = list(raw), list(reasons), list(lines)
    if not raw:
        return QUARANTINE.empty_frame()
    name = Path(source_file).name
    out = pd.DataFrame(
        {
            "source": SOURCE,
            "day": list(days) if days is not None else [None] * len(raw),
            "source_file": source_file,
            "line": pd.array(lines, dtype="Int64"),
            "raw": [bounded(r) for r in raw],
            "reason": [f"{name}: {r}" for r in reasons],
            "detected_at": detected_at,
        }
    )
    return QUARANTINE.conform(out)


def _unopenable(path: Path, reason: str, detected_at: datetime) -> FocusFile:
    quarantine = quarantine_frame(
        source_file=str(path),
        detected_at=detected_at,
        raw=[f"<file {path.name}, {_size(path)} bytes>"],
        reasons=[f"file cannot be read: {reason}"],
        lines=[None],
    )
    return FocusFile(pd.DataFrame(), pd.Series(dtype="int64"), quarantine, reason)


def _size(path: Path) -> str:
    try:
        return f"{path.stat().st_size:,}"
    except OSError:
        return "?"


def read_focus_records(path: str | Path, *, detected_at: datetime) -> FocusFile:
    """Every readable record of a FOCUS file and a quarantine row for the rest; never raises."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            return _read_parquet(path, detected_at)
        if name.endswith((".csv", ".csv.gz")):
            return _read_csv(path, detected_at)
        return _unopenable(path, f"not a FOCUS file ({', '.join(FOCUS_SUFFIXES)})", detected_at)
    except Exception as exc:  # the contract: one bad file never stops the others
        return _unopenable(path, f"{type(exc).__name__}: {exc}", detected_at)


def _renamed(df: pd.DataFrame) -> pd.DataFrame:
    return df.rename(columns={k: v for k, v in RENAMES.items() if v not in df.columns})


def _read_parquet(path: Path, detected_at: datetime) -> FocusFile:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        return _unopenable(path, f"not a readable Parquet file: {exc}", detected_at)
    frames, lines, bad_lines, bad_reasons, first = [], [], [], [], 1
    for group in range(pf.num_row_groups):
        n = pf.metadata.row_group(group).num_rows
        try:
            frame = pf.read_row_group(group).to_pandas()
        except (pa.ArrowException, OSError) as exc:
            bad_lines.append(first)
            bad_reasons.append(f"row group {group} ({n} rows from row {first}) unreadable: {exc}")
        else:
            frames.append(frame)
            lines.extend(range(first, first + n))
        first += n
    records = pd.concat(frames, ignore_index=True) if frames else pf.schema_arrow.empty_table()
    if not isinstance(records, pd.DataFrame):
        records = records.to_pandas()
    quarantine = quarantine_frame(
        source_file=str(path),
        detected_at=detected_at,
        raw=[f"<row group starting at row {line}>" for line in bad_lines],
        reasons=bad_reasons,
        lines=bad_lines,
    )
    return FocusFile(_renamed(records), pd.Series(lines, dtype="int64"), quarantine)


def _check_gzip(path: Path) -> str | None:
    """Why a gzip file cannot be decompressed to its end, or None if it can."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except _GZIP_ERRORS as exc:
        return f"not a complete gzip stream: {type(exc).__name__}: {exc}"
    return None


def _open_text(path: Path) -> io.TextIOBase:
    gz = path.name.lower().endswith(".gz")
    raw = gzip.open(path, "rb") if gz else path.open("rb")  # noqa: SIM115 - the wrapper closes it
    return io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")


def _read_csv(path: Path, detected_at: datetime) -> FocusFile:
    if path.name.lower().endswith(".gz") and (problem := _check_gzip(path)):
        return _unopenable(path, problem, detected_at)
    with _open_text(path) as f:
        header = next(csv.reader(f), None)
    if not header or not any(h.strip() for h in header):
        return _unopenable(path, "empty file: no header row", detected_at)
    if any(_is_surrogate(h) for h in header):
        return _unopenable(path, "header is not UTF-8", detected_at)
    try:
        return _read_csv_arrow(path, header, detected_at)
    except pa.ArrowException:
        # Invalid UTF-8 or broken quoting: the slower reader finds the records at fault.
        return _read_csv_python(path, header, detected_at)


def _read_csv_arrow(path: Path, header: list[str], detected_at: datetime) -> FocusFile:
    bad: list[tuple[int, str, str]] = []

    def invalid(row: pacsv.InvalidRow) -> str:
        reason = f"{row.actual_columns} field(s), the header has {row.expected_columns}"
        bad.append((row.number or 0, row.text, reason))
        return "skip"

    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 24),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=invalid),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()),
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    records = table.to_pandas()
    skipped = {number for number, _, _ in bad}
    total = len(records) + len(bad)
    lines = [n for n in range(2, total + 2) if n not in skipped][: len(records)]
    quarantine = quarantine_frame(
        source_file=str(path),
        detected_at=detected_at,
        raw=[text for _, text, _ in bad],
        reasons=[reason for _, _, reason in bad],
        lines=[number for number, _, _ in bad],
    )
    return FocusFile(_renamed(records), pd.Series(lines, dtype="int64"), quarantine)


def _is_surrogate(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _read_csv_python(path: Path, header: list[str], detected_at: datetime) -> FocusFile:
    rows, lines, bad_raw, bad_reasons, bad_lines = [], [], [], [], []
    with _open_text(path) as f:
        reader = csv.reader(f)
        next(reader, None)
        record = 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                record += 1
                bad_raw.append(f"<unparseable record near line {reader.line_num}>")
                bad_reasons.append(f"CSV error: {exc}")
                bad_lines.append(record)
                continue
            record += 1
            text = ",".join(fields)
            if len(fields) != len(header):
                reason = f"{len(fields)} field(s), the header has {len(header)}"
            elif _is_surrogate(text):
                reason = "not UTF-8 text"
            else:
                rows.append([v if v != "" else None for v in fields])
                lines.append(record)
                continue
            bad_raw.append(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
            bad_reasons.append(reason)
            bad_lines.append(record)
    records = pd.DataFrame(rows, columns=header, dtype=object)
    quarantine = quarantine_frame(
        source_file=str(path),
        detected_at=detected_at,
        raw=bad_raw,
        reasons=bad_reasons,
        lines=bad_lines,
    )
    return FocusFile(_renamed(records), pd.Series(lines, dtype="int64"), quarantine)
