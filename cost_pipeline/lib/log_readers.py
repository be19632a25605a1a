"""Turning the bytes of a log file into Arrow tables of records, one bounded chunk at a time.

Text formats (JSON Lines, CSV) are read in large blocks and cut at line ends in numpy; each
chunk is parsed by pyarrow in one call (multi-threaded). If pyarrow rejects the chunk (one line
of bad JSON, invalid UTF-8, a value of an unexpected type), the chunk is split into pieces and
each failing piece is halved until the failing lines stand alone; only those are decoded in
Python, each becoming a record with its problem named, or a rejected line. The cost of a bad line
is thus a few re-parses of its neighbourhood, never a slow path for the whole file.

Lines longer than `MAX_LINE_BYTES` are rejected without being held in memory, so a file of binary
junk with no line breaks costs no more memory than a block. Read errors (a truncated or corrupt
gzip stream) end the file: what was read before is returned, and the error is reported with the
line where reading stopped. Parquet is read with `iter_batches`.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from cost_pipeline.lib import log_text as lt
from cost_pipeline.lib import log_values as lv
from cost_pipeline.lib.log_text import READ_ERRORS, TextChunk, bounded, open_binary
from cost_pipeline.lib.usage_shapes import LOG_SCHEMA, normalize, span_status_text

PARSE_BLOCK = 32 << 20  # pyarrow's unit of (parallel) parsing; must exceed MAX_LINE_BYTES
SPLIT_LINES = 1024
PARSE_ERRORS = (pa.ArrowException, ValueError, UnicodeError, OverflowError, RecursionError)
_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


@dataclass
class Parsed:
    """Records of one chunk: the table, each row's line number and raw text, and the lines
    that are no record at all (line, raw, reason); `problems` are per-row reasons found while
    decoding a line by hand."""

    table: pa.Table
    lines: np.ndarray
    raw_of: Callable[[np.ndarray], list[str]]
    rejected: list[tuple[int | None, str, str]] = field(default_factory=list)
    problems: dict[int, list[str]] = field(default_factory=dict)


# -- parsing a text chunk: fast path, then isolation of the failing lines -----------------------

BlockParser = Callable[[memoryview], pa.Table]
LineParser = Callable[[bytes], tuple[dict | None, list[str], str | None]]


def parse_text(
    chunk: TextChunk, block: BlockParser, line: LineParser, schema: pa.Schema, *, objects: bool
) -> Parsed:
    """Parse every non-blank line of `chunk`; rows map to lines, failures stand alone."""
    # pyarrow does not reliably reject invalid UTF-8, and crashes on a top-level `null`: such
    # lines (for JSON: every line not starting with "{") are taken out and decoded by hand.
    broken = _invalid_utf8_lines(chunk)
    if objects:
        present = np.flatnonzero(chunk.ends > chunk.starts)
        first = np.frombuffer(chunk.data, dtype=np.uint8)[chunk.starts[present]]
        broken = np.union1d(broken, present[first != ord("{")])
    if len(broken):
        blanked = bytearray(chunk.data)
        for i in broken.tolist():
            blanked[chunk.starts[i] : chunk.ends[i]] = b" " * int(chunk.ends[i] - chunk.starts[i])
        original, chunk.data = chunk.data, bytes(blanked)
    rows = np.flatnonzero(chunk.ends > chunk.starts)
    tables: list[pa.Table] = []
    row_lines: list[np.ndarray] = []
    rejected = [(number, raw, _too_long(raw)) for number, raw in chunk.oversize]
    records: list[dict] = []
    record_lines: list[int] = []
    problems: dict[int, list[str]] = {}
    view = memoryview(chunk.data)

    def attempt(lo: int, hi: int) -> bool:
        first, last = rows[lo], rows[hi - 1]
        try:
            table = block(view[chunk.starts[first] : chunk.ends[last]])
        except PARSE_ERRORS:
            return False
        if table.num_rows != hi - lo:  # e.g. two JSON objects on one line
            return False
        tables.append(table)
        row_lines.append(rows[lo:hi])
        return True

    if len(broken):
        chunk.data = original
        rows = np.setdiff1d(rows, broken)
        for i in broken.tolist():
            record, found, reason = line(chunk.line(i))
            if record is not None:  # e.g. a valid object after leading spaces
                if found:
                    problems[len(records)] = found
                records.append(record)
                record_lines.append(i)
            elif reason is not None:
                rejected.append((chunk.first_line + i, chunk.raw(i), reason))
    todo = [(0, len(rows))] if len(rows) else []
    whole = True
    while todo:
        lo, hi = todo.pop()
        if attempt(lo, hi):
            whole = False
            continue
        if hi - lo == 1:
            i = int(rows[lo])
            record, found, reason = line(chunk.line(i))
            if record is not None:
                if found:
                    problems[len(records)] = found
                records.append(record)
                record_lines.append(i)
            elif reason is not None:
                rejected.append((chunk.first_line + i, chunk.raw(i), reason))
            continue
        size = SPLIT_LINES if whole and hi - lo > SPLIT_LINES else (hi - lo + 1) // 2
        whole = False
        todo.extend(reversed([(a, min(a + size, hi)) for a in range(lo, hi, size)]))

    if records:
        tables.append(pa.Table.from_pylist(records, schema=schema))
        row_lines.append(np.array(record_lines, dtype=np.int64))
    if len(tables) > 1 or records:
        # Pieces parsed apart may differ in inferred types: fit each to `schema`.
        fitted, offset, merged = [], 0, {}
        slow_offset = sum(t.num_rows for t in tables[:-1]) if records else -1
        for t in tables:
            if offset == slow_offset:
                merged |= {offset + k: v for k, v in problems.items()}
                fitted.append(t)
            else:
                t, found = project(t, schema)
                merged |= {offset + k: v for k, v in found.items()}
                fitted.append(t)
            offset += t.num_rows
        tables, problems = fitted, merged
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    index = np.concatenate(row_lines) if row_lines else np.zeros(0, dtype=np.int64)
    order = np.argsort(index, kind="stable")
    if len(order) and (order != np.arange(len(order))).any():
        table = table.take(pa.array(order))
        index = index[order]
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        problems = {int(back[k]): v for k, v in problems.items()}

    def raw_of(positions: np.ndarray) -> list[str]:
        return [chunk.raw(int(index[p])) for p in positions]

    return Parsed(table, index + chunk.first_line, raw_of, rejected, problems)


def _invalid_utf8_lines(chunk: TextChunk) -> np.ndarray:
    """Indices of the lines of `chunk` that are not valid UTF-8 (checked in C when valid)."""
    data = chunk.data
    if data.isascii():
        return np.zeros(0, dtype=np.int64)
    try:
        data.decode("utf-8")
        return np.zeros(0, dtype=np.int64)
    except UnicodeDecodeError:
        pass
    high = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) >= 0x80)
    lines = np.unique(np.searchsorted(chunk.starts, high, side="right") - 1)
    found = []
    for i in lines.tolist():
        try:
            chunk.line(i).decode("utf-8")
        except UnicodeDecodeError:
            found.append(i)
    return np.array(found, dtype=np.int64)


def _too_long(raw: str) -> str:
    return f"the line is longer than {lt.MAX_LINE_BYTES:,} bytes"


# -- JSON Lines ---------------------------------------------------------------------------------

_READ = pa_json.ReadOptions(block_size=PARSE_BLOCK, use_threads=True)
# The time fields are declared as text: pyarrow would otherwise infer a timestamp from
# "2026-09-08T22:30:00-05:00" and the offset check would be lost. Everything else is inferred:
# an explicit schema of every field any usage shape may use parses 2-3 times slower (mostly
# filling absent nested columns); `project` unifies pieces parsed apart. (Other text that
# looks like a timestamp is inferred as one and then quarantined as "not text", never altered.)
_TIME_FIELDS = pa.schema(
    [(name, pa.string()) for name in ("occurred_at", "start_time", "end_time")]
)
_PARSE = pa_json.ParseOptions(explicit_schema=_TIME_FIELDS, unexpected_field_behavior="infer")


def json_block(data: memoryview) -> pa.Table:
    source = pa.BufferReader(pa.py_buffer(data))
    return pa_json.read_json(source, read_options=_READ, parse_options=_PARSE)


def project(table: pa.Table, schema: pa.Schema) -> tuple[pa.Table, dict[int, list[str]]]:
    """`table` with exactly `schema`'s fields and types, and the rows whose values did not fit.

    Used to put pieces parsed separately (each with its own inferred types) into one table; a
    value that does not fit its field (an object where text is expected, a word where a count
    is) is named as a problem of its row instead of being dropped.
    """
    problems: dict[int, list[str]] = {}
    table = normalize(table)
    columns = [
        _fit(_child(table, f.name), f.type, f.name, table.num_rows, problems) for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema), problems


def _child(parent: pa.Table | pa.StructArray, name: str) -> pa.Array | None:
    if isinstance(parent, pa.Table):
        return lv.flat(parent.column(name)) if name in parent.column_names else None
    kind = parent.type
    return pc.struct_field(parent, name) if kind.get_field_index(name) >= 0 else None


def _fit(array: pa.Array | None, kind: pa.DataType, name: str, n: int, problems: dict) -> pa.Array:
    if array is None or pa.types.is_null(array.type):
        return pa.nulls(n, kind)
    if array.type == kind:
        return array
    bad: np.ndarray | None = None
    what = "is not text"
    if pa.types.is_struct(kind):
        if pa.types.is_struct(array.type):
            children = [
                _fit(_child(array, f.name), f.type, f"{name}.{f.name}", n, problems) for f in kind
            ]
            return pa.StructArray.from_arrays(
                children, fields=list(kind), mask=pc.invert(array.is_valid())
            )
        bad, what, out = lv.mask(array.is_valid()), "is not an object", pa.nulls(n, kind)
    elif pa.types.is_floating(kind):
        values, present, not_number = lv.counts(array, n)
        bad, what = not_number, "is not an integer"
        out = pa.array(values, kind, mask=~present | not_number)
    elif pa.types.is_boolean(kind):
        out, bad = lv.booleans(array, n)
        what = "is not true or false"
    elif name == "status" and pa.types.is_struct(array.type):
        out = span_status_text(array)
    else:
        out, bad = lv.text(array, n)
    if bad is not None and bad.any():
        rows = np.flatnonzero(bad)
        for r, v in zip(rows.tolist(), lv.python_values(array, rows), strict=True):
            problems.setdefault(r, []).append(f"{name} {what}: {_show(v)}")
    return out


def json_line(line: bytes) -> tuple[dict | None, list[str], str | None]:
    """One line by hand: (record coerced to LOG_SCHEMA, its problems, or why it is no record)."""
    if not line.strip():
        return None, [], None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [], f"the line is not valid UTF-8 (byte {exc.start})"
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return None, [], f"the line is not valid JSON ({exc})"[:300]
    if not isinstance(value, dict):
        return None, [], f"the line is JSON but not an object (got {type(value).__name__})"
    problems: list[str] = []
    if isinstance(value.get("status"), dict):
        value["status"] = _span_status(value["status"])
    if isinstance(value.get("attributes"), list):
        value["attributes"] = _otlp_attributes(value["attributes"])
    return _coerce_struct(value, LOG_SCHEMA, "", problems), problems, None


def _span_status(status: dict) -> str:
    code = str(status.get("status_code", status.get("code", ""))).upper()
    return "error" if "ERROR" in code or code == "2" else "ok"


def _otlp_attributes(items: list) -> dict:
    """OTLP/JSON's attribute list ([{key, value: {intValue: "12"}}]) as a plain object."""
    out: dict[str, Any] = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("value"), dict):
            value = item["value"]
            for kind in ("stringValue", "intValue", "doubleValue", "boolValue"):
                if kind in value:
                    out[str(item.get("key"))] = value[kind]
    return out


def _coerce_struct(value: dict, fields: Any, prefix: str, problems: list[str]) -> dict:
    return {
        f.name: _coerce(value.get(f.name), f.type, f"{prefix}{f.name}", problems) for f in fields
    }


def _coerce(value: Any, kind: pa.DataType, name: str, problems: list[str]) -> Any:
    if value is None:
        return None
    if pa.types.is_struct(kind):
        if isinstance(value, dict):
            return _coerce_struct(value, kind, f"{name}.", problems)
        problems.append(f"{name} is not an object: {_show(value)}")
    elif pa.types.is_floating(kind):
        if isinstance(value, bool):
            problems.append(f"{name} is not an integer: {_show(value)}")
        elif isinstance(value, int):
            return float(value) if abs(value) < 1e300 else float("inf")
        elif isinstance(value, float):
            return value
        elif isinstance(value, str) and _NUMBER.fullmatch(value):
            return float(value)
        else:
            problems.append(f"{name} is not an integer: {_show(value)}")
    elif pa.types.is_boolean(kind):
        words = {"true": True, "false": False, "1": True, "0": False}
        key = str(value).strip().lower() if not isinstance(value, dict | list) else None
        if isinstance(value, bool):
            return value
        if key in words:
            return words[key]
        problems.append(f"{name} is not true or false: {_show(value)}")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            problems.append(f"{name} is not valid text (an unpaired surrogate)")
            return None
        return value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else repr(value)
    else:
        problems.append(f"{name} is not text: {_show(value)}")
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- CSV ----------------------------------------------------------------------------------------


def csv_names(header: bytes) -> list[str]:
    """Column names of a header line (a repeated name is kept once; later copies are ignored)."""
    names = next(csv.reader([header.decode("utf-8-sig").rstrip("\r\n")]), [])
    seen: dict[str, int] = {}
    out = []
    for name in names:
        name = name.strip()
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}\x00{seen[name]}")
    return out


def csv_parsers(names: list[str]) -> tuple[BlockParser, LineParser, pa.Schema]:
    schema = pa.schema([(n, pa.string()) for n in names])
    read = pa_csv.ReadOptions(column_names=names, block_size=PARSE_BLOCK, use_threads=True)
    convert = pa_csv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.string()),
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )

    def block(data: memoryview) -> pa.Table:
        source = pa.BufferReader(pa.py_buffer(data))
        return pa_csv.read_csv(source, read_options=read, convert_options=convert)

    def line(raw: bytes) -> tuple[dict | None, list[str], str | None]:
        if not raw.strip():
            return None, [], None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, [], f"the line is not valid UTF-8 (byte {exc.start})"
        try:
            fields = next(csv.reader([text], strict=True), [])
        except csv.Error as exc:
            return None, [], f"the CSV row cannot be parsed ({exc})"
        if len(fields) != len(names):
            return (
                None,
                [],
                f"the CSV row has {len(fields)} field(s) where the header has {len(names)}",
            )
        return dict(zip(names, fields, strict=True)), [], None

    return block, line, schema


# -- Parquet ------------------------------------------------------------------------------------


def parquet_chunks(path: Path, chunk_rows: int, problems: list[tuple[int | None, str]]):
    """Batches of a Parquet file as `Parsed`; a read failure is appended to `problems`."""
    with tempfile.TemporaryDirectory() as tmp:
        if path.name.lower().endswith(".gz"):
            # Parquet needs random access: a gzipped file is unpacked to disk, streamed.
            plain = Path(tmp) / "log.parquet"
            try:
                with open_binary(path) as src, open(plain, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except READ_ERRORS as exc:
                problems.append((None, f"cannot decompress: {type(exc).__name__}: {exc}"))
                return
            path = plain
        try:
            parquet = pq.ParquetFile(path)
            wanted = [n for n in parquet.schema_arrow.names if n in LOG_SCHEMA.names]
            batches = parquet.iter_batches(batch_size=chunk_rows, columns=wanted)
        except PARSE_ERRORS + READ_ERRORS as exc:
            problems.append((None, f"not a readable Parquet file: {type(exc).__name__}: {exc}"))
            return
        row = 1
        while True:
            try:
                batch = next(batches, None)
            except PARSE_ERRORS + READ_ERRORS as exc:
                problems.append((row, f"Parquet data unreadable from row {row}: {exc}"))
                return
            if batch is None:
                return
            table = pa.Table.from_batches([batch])
            lines = np.arange(row, row + table.num_rows, dtype=np.int64)
            row += table.num_rows
            yield Parsed(table, lines, _json_of(table))


def _json_of(table: pa.Table) -> Callable[[np.ndarray], list[str]]:
    def raw_of(rows: np.ndarray) -> list[str]:
        out = []
        for row in rows.tolist():
            try:
                out.append(bounded(json.dumps(table.slice(row, 1).to_pylist()[0], default=str)))
            except lv.SHOW_ERRORS:
                out.append(lv.UNREADABLE)
        return out

    return raw_of
