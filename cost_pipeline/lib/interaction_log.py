"""Reading the app's per-call interaction log: JSON Lines, CSV or Parquet, optionally gzipped.

`iter_log_file` streams a file in chunks of at most `chunk_rows` records and yields, per chunk,
the records that satisfy the `llm_interactions` contract and the ones that do not (whole, with a
reason naming the field and the problem) for the `quarantine` table. Validation is vectorized per
chunk; JSON is parsed by pyarrow in one go, and only a chunk that pyarrow rejects (a malformed
line, a value of the wrong JSON type) is decoded line by line so that each bad line is
quarantined on its own.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from cost_pipeline.catalog import LLM_INTERACTIONS, QUARANTINE
from cost_pipeline.lib.schemas import TOKEN_COLUMNS

SOURCE = "llm_interactions"
REQUIRED_TEXT = ("event_id", "tenant_id", "provider", "model")
OPTIONAL_TEXT = ("user_id", "agent_id", "workflow_id", "parent_event_id", "service_tier", "status")
CACHE_PARTS = ("cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens")
JSON_SUFFIXES = (".jsonl", ".ndjson")
# RFC 3339 demands an offset; a naive timestamp would silently be read as UTC and shift a
# tenant's day, so it is rejected instead.
_OFFSET = r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)\s*$"

_ARROW_SCHEMA = pa.schema(
    [
        *(pa.field(name, pa.string()) for name in ("event_id", "occurred_at")),
        *(pa.field(name, pa.string()) for name in REQUIRED_TEXT[1:] + OPTIONAL_TEXT),
        pa.field("batch", pa.bool_()),
        *(pa.field(name, pa.int64()) for name in TOKEN_COLUMNS),
        pa.field("latency_ms", pa.int64()),
    ]
)


@dataclass(frozen=True)
class LogChunk:
    """One chunk of a log file: rows to load, rows to quarantine, in-file duplicates dropped."""

    good: pd.DataFrame
    quarantine: pd.DataFrame
    duplicates: int = 0


def file_digest(path: str | Path, *, block_size: int = 1 << 20) -> str:
    """sha256 of the file's bytes, read in blocks (the same content always has the same digest)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(block_size):
            digest.update(block)
    return digest.hexdigest()


def log_format(path: str | Path) -> str:
    """`jsonl`, `csv` or `parquet` from the file name (a trailing `.gz` is allowed)."""
    name = Path(path).name.lower().removesuffix(".gz")
    if name.endswith(JSON_SUFFIXES):
        return "jsonl"
    for fmt in ("csv", "parquet"):
        if name.endswith(f".{fmt}"):
            return fmt
    raise ValueError(f"{Path(path).name}: not an interaction log (.jsonl, .ndjson, .csv, .parquet)")


def iter_log_file(
    path: str | Path, *, known_providers: Collection[str], chunk_rows: int = 500_000
) -> Iterator[LogChunk]:
    """Stream `path` in chunks of at most `chunk_rows` records, validated and split.

    Duplicate `event_id`s within the file keep their first valid occurrence; the others are
    counted in `LogChunk.duplicates` (across chunks too, by a 64-bit hash of the id).
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    path = Path(path)
    validator = _Validator(path.name, frozenset(known_providers))
    fmt = log_format(path)
    readers = {"jsonl": _jsonl_frames, "csv": _csv_frames, "parquet": _parquet_frames}
    for frame, raw_of, rejected in readers[fmt](path, chunk_rows):
        yield validator.check(frame, raw_of, rejected)


# -- readers: each yields (frame of parsed records, raw text of a frame row, rejected rows) ------

RawOf = Callable[[np.ndarray], list[str]]
# Parsed records: an Arrow table straight from the JSON reader (strings never become Python
# objects before they are validated) or a DataFrame from the other readers.
Frame = pa.Table | pd.DataFrame
Rejected = list[tuple[str, str]]  # (raw text, reason) of records that could not even be parsed


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _line_chunks(fh: IO[bytes], chunk_rows: int) -> Iterator[tuple[list[bytes], bytes]]:
    """Chunks of non-blank lines (without line ends) and the same lines as one buffer.

    The file is read in large blocks and split in C: reading line by line is several times
    slower, and much slower still through gzip.
    """
    pending = b""
    lines: list[bytes] = []
    while True:
        block = fh.read(1 << 24)
        if block:
            data = pending + block
            cut = data.rfind(b"\n")
            if cut < 0:
                pending = data
                continue
            pending = data[cut + 1 :]
            lines.extend(data[:cut].split(b"\n"))
        elif pending:
            lines.append(pending)
            pending = b""
        while len(lines) >= chunk_rows or (not block and lines):
            chunk, lines = lines[:chunk_rows], lines[chunk_rows:]
            if b"" in chunk:
                chunk = [line for line in chunk if line]  # blank lines are no records
            if chunk:
                yield chunk, b"\n".join(chunk) + b"\n"
        if not block:
            return


def _texts(lines: list[bytes]) -> RawOf:
    return lambda rows: [lines[i].rstrip(b"\r").decode("utf-8", "replace") for i in rows]


def _jsonl_frames(path: Path, chunk_rows: int) -> Iterator[tuple[pd.DataFrame, RawOf, Rejected]]:
    with _open(path) as fh:
        for lines, buffer in _line_chunks(fh, chunk_rows):
            try:
                table = pa_json.read_json(
                    io.BytesIO(buffer),
                    read_options=pa_json.ReadOptions(block_size=max(len(buffer), 1 << 20)),
                    parse_options=pa_json.ParseOptions(
                        explicit_schema=_ARROW_SCHEMA, unexpected_field_behavior="ignore"
                    ),
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                yield _jsonl_slow(lines)
                continue
            yield table, _texts(lines), []


def _jsonl_slow(lines: list[bytes]) -> tuple[pd.DataFrame, RawOf, Rejected]:
    """Line by line: only for a chunk that holds a malformed line or an oddly typed value."""
    records: list[dict] = []
    kept: list[bytes] = []
    rejected: Rejected = []
    for line in lines:
        if not line.strip():
            continue
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        try:
            value = json.loads(line)
        except ValueError as exc:
            rejected.append((text, f"the line is not valid JSON ({exc})"))
            continue
        if not isinstance(value, dict):
            kind = type(value).__name__
            rejected.append((text, f"the line is JSON but not an object (got {kind})"))
            continue
        records.append(value)
        kept.append(line)
    return pd.DataFrame.from_records(records), _texts(kept), rejected


def _csv_frames(path: Path, chunk_rows: int) -> Iterator[tuple[pd.DataFrame, RawOf, Rejected]]:
    with _open(path) as fh:
        header = fh.readline()
        names = next(csv.reader([header.decode("utf-8-sig")]), [])
        for lines, buffer in _line_chunks(fh, chunk_rows):
            if not _field_counts_match(lines, len(names)):
                yield _csv_slow(lines, names)
                continue
            try:
                frame = pd.read_csv(
                    io.BytesIO(buffer),
                    names=names,
                    header=None,
                    dtype=str,
                    keep_default_na=False,
                    engine="c",
                )
            except (pd.errors.ParserError, UnicodeDecodeError):
                frame = None
            if frame is None or len(frame) != len(lines):
                yield _csv_slow(lines, names)
                continue
            yield frame.replace("", None), _texts(lines), []


def _field_counts_match(lines: list[bytes], expected: int) -> bool:
    """Whether every row has the header's field count (pandas pads short rows silently)."""
    commas = np.fromiter((line.count(b",") for line in lines), dtype=np.int64, count=len(lines))
    if (commas == expected - 1).all():
        return True
    # A quoted field may hold commas: count those rows properly.
    for i in np.flatnonzero(commas != expected - 1):
        if b'"' not in lines[i]:
            return False
        if len(next(csv.reader([lines[i].decode("utf-8", "replace")]), [])) != expected:
            return False
    return True


def _csv_slow(lines: list[bytes], names: list[str]) -> tuple[pd.DataFrame, RawOf, Rejected]:
    records: list[list[str]] = []
    kept: list[bytes] = []
    rejected: Rejected = []
    for line in lines:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        fields = next(csv.reader([text]), [])
        if len(fields) != len(names):
            rejected.append(
                (text, f"the CSV row has {len(fields)} field(s) where the header has {len(names)}")
            )
            continue
        records.append(fields)
        kept.append(line)
    frame = pd.DataFrame(records, columns=names, dtype=object)
    return frame.replace("", None), _texts(kept), rejected


def _parquet_frames(path: Path, chunk_rows: int) -> Iterator[tuple[pd.DataFrame, RawOf, Rejected]]:
    with tempfile.TemporaryDirectory() as tmp:
        if path.name.lower().endswith(".gz"):
            # Parquet needs random access: a gzipped file is unpacked to disk, streamed.
            plain = Path(tmp) / "log.parquet"
            with _open(path) as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            path = plain
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            frame = batch.to_pandas()
            yield frame, _records_as_json(frame), []


def _records_as_json(frame: pd.DataFrame) -> RawOf:
    def raw_of(rows: np.ndarray) -> list[str]:
        subset = frame.iloc[rows].astype(object).where(frame.iloc[rows].notna(), None)
        return [json.dumps(r, default=str) for r in subset.to_dict("records")]

    return raw_of


# -- validation ---------------------------------------------------------------------------------


class _Validator:
    """Validates chunks of one file, remembering the event ids already loaded from it."""

    def __init__(self, source_file: str, known_providers: frozenset[str]) -> None:
        self.source_file = source_file
        self.known_providers = known_providers
        self.seen = np.empty(0, dtype=np.uint64)

    def check(self, frame: Frame, raw_of: RawOf, rejected: Rejected) -> LogChunk:
        if isinstance(frame, pd.DataFrame):
            frame = frame.reset_index(drop=True)
        n = len(frame)
        reasons = _Reasons(n)
        text = {name: _text(frame, name, n) for name in REQUIRED_TEXT + OPTIONAL_TEXT}
        for name in REQUIRED_TEXT:
            reasons.add(text[name].isna(), f"{name} is missing or empty")

        raw_ts_arrow = _arrow_text(frame, "occurred_at", n)
        raw_ts = raw_ts_arrow.to_pandas()
        ts = pd.to_datetime(raw_ts, utc=True, errors="coerce", format="ISO8601")
        has_offset = pd.Series(
            pc.match_substring_regex(raw_ts_arrow, _OFFSET)
            .fill_null(False)
            .to_numpy(zero_copy_only=False)
        )
        reasons.add(raw_ts.isna(), "occurred_at is missing or empty")
        bad_ts = raw_ts.notna() & (ts.isna() | ~has_offset)
        reasons.add(
            bad_ts,
            "occurred_at ",
            raw_ts.where(bad_ts).map(repr, na_action="ignore"),
            " is not an RFC 3339 timestamp with a UTC offset",
        )
        ts = ts.where(~bad_ts)

        counts: dict[str, pd.Series] = {}
        valid: dict[str, pd.Series] = {}
        for name in (*TOKEN_COLUMNS, "latency_ms"):
            values, present, non_int = _integers(frame, name, n)
            reasons.add(non_int, f"{name} is not an integer: ", _shown(frame, name, non_int))
            negative = present & ~non_int & (values < 0)
            if negative.any():
                shown = values.where(negative).astype("Int64")
                reasons.add(negative, f"{name} is negative: ", shown)
            valid[name] = ~non_int & ~negative
            counts[name] = values.where(valid[name])
        cache = sum(counts[c].fillna(0) for c in CACHE_PARTS)
        too_small = counts["input_tokens"].notna() & (counts["input_tokens"].fillna(0) < cache)
        for c in CACHE_PARTS:
            too_small &= valid[c]
        if too_small.any():
            reasons.add(
                too_small,
                "input_tokens (",
                counts["input_tokens"].astype("Int64").astype(str),
                ") is smaller than cache_read_tokens + cache_write_tokens"
                " + cache_write_1h_tokens (",
                cache.astype("Int64").astype(str),
                "); input_tokens must be the total input",
            )

        provider = text["provider"]
        unknown = provider.notna() & ~provider.isin(self.known_providers)
        if unknown.any():
            shown = provider.where(unknown).map(repr, na_action="ignore")
            reasons.add(unknown, "provider ", shown, " is unknown")

        batch, bad_batch = _booleans(frame, "batch", n)
        reasons.add(bad_batch, "batch is not true or false: ", _shown(frame, "batch", bad_batch))

        bad = reasons.any()
        good_rows = ~bad
        duplicates = self._drop_duplicates(text["event_id"], good_rows)
        keep = good_rows & ~duplicates
        good = pd.DataFrame(
            {
                **{name: text[name][keep] for name in REQUIRED_TEXT + OPTIONAL_TEXT},
                "occurred_at": ts[keep],
                "day": ts[keep].dt.tz_localize(None).dt.normalize(),
                "batch": batch[keep],
                **{c: counts[c][keep].fillna(0).astype("int64") for c in TOKEN_COLUMNS},
                "latency_ms": counts["latency_ms"][keep],
                "source_file": self.source_file,
            }
        )
        bad_rows = np.flatnonzero(bad.to_numpy())
        quarantine = pd.DataFrame(
            {
                "day": ts.iloc[bad_rows].dt.date.to_numpy(dtype=object),
                "raw": raw_of(bad_rows),
                "reason": reasons.text().iloc[bad_rows].to_numpy(dtype=object),
            }
        )
        if rejected:
            unparsed = pd.DataFrame(rejected, columns=["raw", "reason"]).assign(day=None)
            quarantine = pd.concat([unparsed, quarantine], ignore_index=True)
        quarantine = quarantine.assign(source=SOURCE, detected_at=datetime.now(UTC))
        quarantine = QUARANTINE.conform(quarantine)
        quarantine["day"] = quarantine["day"].where(quarantine["day"].notna(), None)
        return LogChunk(
            good=LLM_INTERACTIONS.conform(good),
            quarantine=quarantine,
            duplicates=int(duplicates.sum()),
        )

    def _drop_duplicates(self, event_id: pd.Series, candidates: pd.Series) -> pd.Series:
        """Mask of valid rows whose event id was loaded before (this chunk or an earlier one)."""
        ids = event_id[candidates]
        hashes = pd.util.hash_array(ids.to_numpy(dtype=object)).astype(np.uint64)
        again = pd.Series(hashes).duplicated().to_numpy() | np.isin(hashes, self.seen)
        self.seen = np.union1d(self.seen, hashes)
        out = pd.Series(False, index=event_id.index)
        out[ids.index[again]] = True
        return out


class _Reasons:
    """Per-row reason text, built column by column without a Python loop over rows."""

    def __init__(self, n: int) -> None:
        self._text = pd.Series("", index=range(n), dtype=object)

    def add(self, mask: pd.Series, *parts: str | pd.Series) -> None:
        mask = mask.fillna(False).astype(bool)
        if not mask.any():
            return
        message = pd.Series("", index=mask.index[mask], dtype=object)
        for part in parts:
            if isinstance(part, pd.Series):
                part = part.reindex(message.index).astype(str)
            message = message + part
        current = self._text[mask]
        self._text[mask] = current.where(current == "", current + "; ") + message

    def any(self) -> pd.Series:
        return self._text != ""

    def text(self) -> pd.Series:
        return self._text


def _column(frame: Frame, name: str) -> pd.Series | None:
    if name not in frame.column_names if isinstance(frame, pa.Table) else name not in frame:
        return None
    if isinstance(frame, pa.Table):
        return frame.column(name).to_pandas()
    return frame[name]


def _arrow_text(frame: Frame, name: str, n: int) -> pa.Array:
    """A text column as Arrow strings, empty and blank values as nulls (missing: all null)."""
    if isinstance(frame, pa.Table) and name in frame.column_names:
        array = frame.column(name).combine_chunks()
        blank = pc.equal(pc.utf8_trim_whitespace(array), "")
        return pc.if_else(blank, pa.scalar(None, pa.string()), array)
    series = _column(frame, name)
    if series is None:
        return pa.nulls(n, pa.string())
    if series.dtype != object or pd.api.types.infer_dtype(series, skipna=True) != "string":
        series = series.where(series.isna(), series.astype(str)).astype(object)
    array = pa.array(series, type=pa.string(), from_pandas=True)
    blank = pc.equal(pc.utf8_trim_whitespace(array), "")
    return pc.if_else(blank, pa.scalar(None, pa.string()), array)


def _text(frame: pd.DataFrame, name: str, n: int) -> pd.Series:
    return _arrow_text(frame, name, n).to_pandas().astype(object)


def _integers(frame: Frame, name: str, n: int) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(values as float, present mask, non-integer mask) of a count column; missing = absent."""
    series = _column(frame, name)
    if series is None:
        absent = pd.Series(False, index=range(n))
        return pd.Series(np.nan, index=range(n)), absent, absent
    present = series.notna()
    if pd.api.types.is_bool_dtype(series):
        return pd.Series(np.nan, index=range(n)), present, present
    if series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) != "string":
        # JSON true/false would otherwise read as 1/0; only a mixed column can hold them.
        is_bool = series.map(type).isin([bool, np.bool_])
        series = series.where(~is_bool, "not-a-number")
    values = pd.to_numeric(series, errors="coerce").astype("float64")
    finite = np.isfinite(values.to_numpy())
    non_integer = present & ~(finite & (values == np.floor(values)))
    return values.where(~non_integer), present, non_integer


def _booleans(frame: Frame, name: str, n: int) -> tuple[pd.Series, pd.Series]:
    series = _column(frame, name)
    if series is None:
        return pd.Series(pd.NA, index=range(n), dtype="boolean"), pd.Series(False, index=range(n))
    if pd.api.types.is_bool_dtype(series):
        return series.astype("boolean"), pd.Series(False, index=range(n))
    words = {"true": True, "false": False, "1": True, "0": False}
    mapped = series.where(series.isna(), series.astype(str).str.strip().str.lower()).map(words)
    invalid = series.notna() & mapped.isna()
    return mapped.astype("boolean"), invalid


def _shown(frame: Frame, name: str, mask: pd.Series) -> pd.Series:
    """The offending values as written, e.g. `'12a'` or `-5` (for the rows in `mask` only)."""
    mask = mask.fillna(False).astype(bool)
    series = _column(frame, name) if mask.any() else None
    if series is None:
        return pd.Series(dtype=object)
    values = series[mask].astype(object)
    return values.map(lambda v: repr(int(v) if isinstance(v, float) and v.is_integer() else v))
