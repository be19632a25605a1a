"""Reading the app's per-call interaction log: JSON Lines, CSV or Parquet, optionally gzipped.

`iter_log_file` streams a file in chunks of at most `chunk_rows` records and yields, per chunk,
an Arrow table of the records that satisfy the `llm_interactions` contract and a quarantine frame
of the ones that do not (file, line, raw text, reason). It never raises for bad content: a bad
record is quarantined on its own (see `log_readers` for how a failing line is isolated), and a
file that cannot be opened, decompressed or read to its end becomes a quarantine row with the
records read before the failure still returned.

Usage may be logged in the canonical shape, as OpenAI or Anthropic usage objects or as
OpenTelemetry GenAI spans (see `usage_shapes`); each maps to the canonical columns. A record
without usage is quarantined (`no usage`), never loaded as zero tokens, and a call beyond the
plausibility bounds (`config.Plausibility`) is quarantined with a reason starting
`implausible_usage:`. A record may carry usage beyond tokens (characters, audio or video
seconds, images, requests) or an app-reported cost (`cost_usd`); a provider nothing prices
(neither the catalog, an override nor a rate card) is quarantined unless the record reports its
cost, and so is a unit that nothing can price for the record's model at any date (`priced_units`,
from the pricing engine): quarantined with the unit named, never loaded as free. The whole path
is vectorized in pyarrow and numpy; Python touches only the rejected rows.

Within a file, an `event_id` seen again with the same content is an exact duplicate (dropped,
counted in `duplicates`); with different content it is a correction: the LAST version is kept
and the earlier ones are counted in `restated_in_file`. Within a chunk only the last version is
yielded. A correction of a row yielded in an EARLIER chunk is yielded again and its id is listed
in `LogChunk.replaces_earlier`: the loader must let it replace the earlier row (upsert on
`event_id`). Across chunks, ids are compared by a 64-bit hash (a false match has probability
about n^2 / 2^65, ~3e-6 for 10 M ids in one file).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cost_pipeline.catalog import LLM_INTERACTIONS, QUARANTINE
from cost_pipeline.lib import log_readers as lr
from cost_pipeline.lib import log_text as lt
from cost_pipeline.lib import log_values as lv
from cost_pipeline.lib.config import Plausibility
from cost_pipeline.lib.schemas import TOKEN_COLUMNS, arrow_schema
from cost_pipeline.lib.usage_shapes import (
    UNIT_SOURCES,
    Canonical,
    canonical,
    context_window,
    normalize,
)

SOURCE = "llm_interactions"
REQUIRED_TEXT = ("event_id", "tenant_id", "provider", "model")
CACHE_PARTS = ("cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens")
JSON_SUFFIXES = (".jsonl", ".ndjson")
GOOD_SCHEMA = arrow_schema(LLM_INTERACTIONS)
# Columns with few distinct values, compared exactly when telling a correction from a copy.
FEW_VALUES = frozenset(
    ("tenant_id", "agent_id", "provider", "model", "service_tier", "status", "day")
)
_EPOCH = date(1970, 1, 1)
# Units checked against what can price them (every call is a request: a missing per-request
# price is no gap).
PRICED_UNITS = ("characters", "audio_seconds", "video_seconds", "images")
PricedUnits = Callable[[str, str], Collection[str]]


@dataclass(frozen=True)
class LogChunk:
    """One chunk of a log file.

    `good`: rows to load, an Arrow table with exactly `arrow_schema(LLM_INTERACTIONS)`.
    `quarantine`: rejected records conformed to `QUARANTINE` (line = 1-based line of the file,
    header included for CSV; row number for Parquet; null for a file-level problem).
    `duplicates`: exact in-file repeats dropped. `restated_in_file`: earlier versions of an id
    that a later, different record of the same file replaced. `replaces_earlier`: ids in `good`
    that correct a row yielded in an earlier chunk of this file.
    """

    good: pa.Table
    quarantine: pd.DataFrame
    duplicates: int = 0
    restated_in_file: int = 0
    replaces_earlier: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))


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


def quarantine_frame(
    path: str | Path,
    rows: list[tuple[int | None, str, str]],
    days: list[date | None] | None = None,
    *,
    detected_at: datetime | None = None,
) -> pd.DataFrame:
    """`rows` of (line, raw, reason) of `path` as a frame conformed to QUARANTINE."""
    frame = pd.DataFrame(
        {
            "source": SOURCE,
            "day": pd.Series(days if days is not None else [None] * len(rows), dtype=object),
            "source_file": Path(path).name,
            "line": pd.array([r[0] for r in rows], dtype="Int64"),
            "raw": [lt.bounded(r[1]) for r in rows],
            "reason": [r[2] for r in rows],
            "detected_at": detected_at or datetime.now(UTC),
        }
    )
    out = QUARANTINE.conform(frame)
    out["day"] = out["day"].astype(object).where(out["day"].notna(), None)
    return out


def open_problem(path: str | Path) -> pd.DataFrame:
    """One quarantine row if `path` cannot be opened or decompressed at all, else no rows."""
    path = Path(path)
    try:
        fmt = log_format(path)
        with lt.open_binary(path) as fh:
            head = fh.read(1 << 16)
        if fmt == "parquet" and not path.name.lower().endswith(".gz"):
            import pyarrow.parquet as pq

            pq.ParquetFile(path)
        elif fmt == "parquet" and not head.startswith(b"PAR1"):
            raise ValueError("not a Parquet file (no PAR1 magic)")
    except (*lt.READ_ERRORS, *lr.PARSE_ERRORS) as exc:
        return _file_problem(path, None, f"cannot read the file: {type(exc).__name__}: {exc}")
    return quarantine_frame(path, [])


def _file_problem(path: Path, line: int | None, reason: str) -> pd.DataFrame:
    size = path.stat().st_size if path.exists() else 0
    return quarantine_frame(path, [(line, f"<file {path.name}, {size:,} bytes>", reason)])


def iter_log_file(
    path: str | Path,
    *,
    known_providers: Collection[str],
    chunk_rows: int = 500_000,
    bounds: Plausibility | None = None,
    priced_units: PricedUnits | None = None,
) -> Iterator[LogChunk]:
    """Stream `path` in chunks of at most `chunk_rows` records, validated and split.

    `bounds` are the plausibility bounds (`Plausibility()` defaults when None).
    `priced_units(provider, model)` names the units beyond tokens something can price for a
    model (`PricingEngine.priced_units`); a record using another one is quarantined. None: units
    are not checked here (the engine flags them `incomplete_usage`). Never raises for the file's
    content; raises ValueError only for a `chunk_rows` below 1.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    path = Path(path)
    check = _Checker(path.name, frozenset(known_providers), bounds or Plausibility(), priced_units)
    try:
        fmt = log_format(path)
    except ValueError as exc:
        yield LogChunk(_empty_good(), _file_problem(path, None, str(exc)))
        return
    problems: list[tuple[int | None, str]] = []
    if fmt == "parquet":
        parsed = lr.parquet_chunks(path, chunk_rows, problems)
    else:
        parsed = _text_parsed(path, fmt, chunk_rows, problems)
    for chunk in parsed:
        yield check(chunk)
    for line, reason in problems:
        yield LogChunk(_empty_good(), _file_problem(path, line, reason))


def _text_parsed(
    path: Path, fmt: str, chunk_rows: int, problems: list[tuple[int | None, str]]
) -> Iterator[lr.Parsed]:
    try:
        fh = lt.open_binary(path)
    except OSError as exc:
        problems.append((None, f"cannot open the file: {exc}"))
        return
    with fh:
        reader = lt.SafeReader(fh)
        first_line = 1
        if fmt == "csv":
            header = reader.readline(lt.MAX_LINE_BYTES + 1)
            if reader.error is None and not header:
                return  # an empty file
            try:
                if reader.error or (not header.endswith(b"\n") and len(header) > lt.MAX_LINE_BYTES):
                    raise ValueError(reader.error or "the header line is too long")
                names = lr.csv_names(header)
            except (ValueError, UnicodeError) as exc:
                problems.append((1 if header else None, f"cannot read the CSV header: {exc}"))
                return
            block, line, schema = lr.csv_parsers(names)
            first_line = 2
        else:
            block, line, schema = lr.json_block, lr.json_line, lr.LOG_SCHEMA
        next_line = first_line
        for chunk in lt.text_chunks(reader, chunk_rows, first_line):
            next_line = chunk.first_line + len(chunk.starts)
            yield lr.parse_text(chunk, block, line, schema, objects=fmt == "jsonl")
        if reader.error is not None and not reader.bytes_read:
            problems.append((None, f"cannot read the file: {reader.error}"))
        elif reader.error is not None:
            problems.append((next_line, f"the file cannot be read past this line: {reader.error}"))


def _empty_good() -> pa.Table:
    return GOOD_SCHEMA.empty_table()


class _Checker:
    """Validates the chunks of one file, remembering the event ids it has yielded."""

    def __init__(
        self,
        source_file: str,
        known: frozenset[str],
        bounds: Plausibility,
        priced_units: PricedUnits | None = None,
    ) -> None:
        self.source_file = source_file
        self.known = pa.array(sorted(known), pa.string())
        self.bounds = bounds
        self.priced_units = priced_units
        self.seen = _SeenIds()

    def __call__(self, parsed: lr.Parsed) -> LogChunk:
        try:
            return self._validate(parsed)
        except lv.SHOW_ERRORS as exc:
            # The last resort for values Arrow itself cannot handle (it has produced invalid
            # UTF-8 from deeply nested JSON): the chunk is quarantined, never loaded or raised.
            reason = f"the record could not be validated ({type(exc).__name__}: {exc})"[:500]
            everything = np.arange(len(parsed.lines))
            try:
                raws = parsed.raw_of(everything)
            except lv.SHOW_ERRORS:
                raws = [lv.UNREADABLE] * len(everything)
            rows = [(int(i), r, reason) for i, r in zip(parsed.lines, raws, strict=True)]
            rows += parsed.rejected
            return LogChunk(_empty_good(), quarantine_frame(self.source_file, rows))

    def _validate(self, parsed: lr.Parsed) -> LogChunk:
        table = normalize(parsed.table)
        n = table.num_rows
        reasons = lv.Reasons(n)
        for row, found in parsed.problems.items():
            flagged = np.zeros(n, dtype=bool)
            flagged[row] = True
            reasons.add(flagged, "; ".join(found))
        c = canonical(
            table,
            reasons,
            max_tokens=self.bounds.max_tokens_per_call,
            max_cost=float(self.bounds.max_cost_per_call_usd),
        )
        self._check(c, reasons)

        bad = reasons.any()
        candidates = np.flatnonzero(~bad)
        good = self._good_table(c, candidates)
        keep, duplicates, restated, replaces = self.seen.admit(good)
        good = good.filter(pa.array(keep)) if not keep.all() else good

        bad_rows = np.flatnonzero(bad)
        valid_day = c.occurred_ok[bad_rows]
        days = [
            _EPOCH + timedelta(days=int(d)) if ok else None
            for d, ok in zip(lv.days_of(c.occurred_us[bad_rows]), valid_day, strict=True)
        ]
        rows = list(
            zip(
                parsed.lines[bad_rows].tolist(),
                parsed.raw_of(bad_rows),
                reasons.texts(bad_rows),
                strict=True,
            )
        )
        rows += parsed.rejected
        days += [None] * len(parsed.rejected)
        order = sorted(range(len(rows)), key=lambda i: rows[i][0] or 0)
        quarantine = quarantine_frame(
            self.source_file, [rows[i] for i in order], [days[i] for i in order]
        )
        return LogChunk(good, quarantine, duplicates, restated, replaces)

    def _check(self, c: Canonical, reasons: lv.Reasons) -> None:
        n = len(c.occurred_us)
        for name in REQUIRED_TEXT:
            reasons.add(~lv.mask(c.text[name].is_valid()), f"{name} is missing or empty")
        provider = c.text["provider"]
        reported = ~np.isnan(c.units["reported_cost_usd"])
        unknown = lv.mask(provider.is_valid()) & ~lv.mask(pc.is_in(provider, value_set=self.known))
        reasons.add(
            unknown & ~reported,
            lambda rows: [
                f"provider {v!r} is unknown: neither the genai-prices catalog nor the "
                "configuration (price_overrides, rate_cards) prices it, and the record reports "
                "no cost_usd"
                for v in lv.python_values(provider, rows)
            ],
        )
        if self.priced_units is not None and n:
            self._check_units(c, reasons, ~reported & ~unknown)
        t = c.tokens
        cache = t["cache_read_tokens"] + t["cache_write_tokens"] + t["cache_write_1h_tokens"]
        small = t["input_tokens"] < cache
        reasons.add(
            small,
            lambda rows: [
                f"input_tokens ({t['input_tokens'][r]}) is smaller than cache_read_tokens + "
                f"cache_write_tokens + cache_write_1h_tokens ({cache[r]}); input_tokens must be "
                "the total input"
                for r in rows
            ],
        )
        total = t["input_tokens"] + t["output_tokens"]
        ceiling = self.bounds.max_tokens_per_call
        reasons.add(
            total > ceiling,
            lambda rows: [
                f"implausible_usage: input_tokens + output_tokens = {total[r]:,} is above the "
                f"ceiling of {ceiling:,} per call"
                for r in rows
            ],
        )
        if self.bounds.check_context_window and n:
            window = self._windows(c)
            limit = window * self.bounds.context_window_tolerance
            over = (window > 0) & (total > limit)
            reasons.add(
                over,
                lambda rows: [
                    f"implausible_usage: input_tokens + output_tokens = {total[r]:,} exceeds the "
                    f"{window[r]:,}-token context window of {c.text['model'][r].as_py()!r}"
                    for r in rows
                ],
            )

    def _check_units(self, c: Canonical, reasons: lv.Reasons, rows: np.ndarray) -> None:
        """Quarantine the use of a unit that nothing prices for the record's model."""
        used = {u: rows & (c.units[u] > 0) for u in PRICED_UNITS}
        if not any(u.any() for u in used.values()):
            return
        encoded, pairs = self._pairs(c)
        assert self.priced_units is not None
        covered = [frozenset(self.priced_units(p, m)) if p and m else frozenset() for p, m in pairs]
        for unit, mask in used.items():
            lacking = np.array([unit not in units for units in covered], dtype=bool)
            if not lacking.any():
                continue
            hit = mask & lacking[encoded]
            quantity = c.units[unit]
            reasons.add(
                hit,
                lambda rs, u=unit, q=quantity: [
                    f"no price for {u} ({q[r]:g}) of {c.text['provider'][r].as_py()}/"
                    f"{c.text['model'][r].as_py()}: neither the genai-prices catalog nor a rate "
                    "card in the configuration (rate_cards) prices it; add a rate card"
                    for r in rs
                ],
            )

    def _pairs(self, c: Canonical) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """Each row's index among the distinct (provider, model) pairs, and the pairs."""
        pairs = pa.table({"p": c.text["provider"], "m": c.text["model"]})
        keys = pc.binary_join_element_wise(
            pc.fill_null(pairs["p"], ""), pc.fill_null(pairs["m"], ""), "\x00"
        )
        encoded = lv.flat(keys).dictionary_encode()
        split = [key.partition("\x00") for key in encoded.dictionary.to_pylist()]
        return encoded.indices.to_numpy(), [(p, m) for p, _, m in split]

    def _windows(self, c: Canonical) -> np.ndarray:
        """Each row's model context window (0 when unknown), looked up once per distinct pair."""
        encoded, pairs = self._pairs(c)
        sizes = [context_window(p, m) or 0 for p, m in pairs]
        return np.asarray(sizes, dtype=np.int64)[encoded]

    def _good_table(self, c: Canonical, rows: np.ndarray) -> pa.Table:
        take = pa.array(rows, pa.int64())
        k = len(rows)
        us = c.occurred_us[rows]
        columns = {name: c.text[name].take(take) for name in c.text}
        columns["occurred_at"] = pa.array(us, pa.int64()).cast(pa.timestamp("us", "UTC"))
        columns["day"] = pa.array(lv.days_of(us), pa.int32()).cast(pa.date32())
        columns["batch"] = lv.flat(c.batch).take(take)
        for name in TOKEN_COLUMNS:
            columns[name] = pa.array(c.tokens[name][rows], pa.int64())
        for name in UNIT_SOURCES:
            values = c.units[name][rows]
            kind = GOOD_SCHEMA.field(name).type
            absent = np.isnan(values)
            filled = np.where(absent, 0, values)
            columns[name] = pa.array(
                filled.astype(np.int64) if pa.types.is_integer(kind) else filled, kind, mask=absent
            )
        columns["latency_ms"] = pa.array(
            c.latency_ms[rows], pa.int64(), mask=~c.latency_present[rows]
        )
        name = self.source_file.encode()
        columns["source_file"] = pa.StringArray.from_buffers(
            k,
            pa.py_buffer(np.arange(k + 1, dtype=np.int32) * len(name)),
            pa.py_buffer(name * k),
        )
        return pa.Table.from_arrays([columns[f.name] for f in GOOD_SCHEMA], schema=GOOD_SCHEMA)


class _SeenIds:
    """The event ids yielded from one file so far, as sorted runs of (id hash, content hash).

    Runs are merged like a binary counter (log-structured), so adding n ids costs O(n log n)
    overall and a lookup O(log^2 n), never a pass over everything seen per chunk.
    """

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []

    def admit(self, good: pa.Table) -> tuple[np.ndarray, int, int, pa.Array]:
        """(rows of `good` to keep, exact duplicates, restatements, ids replacing earlier rows)."""
        n = good.num_rows
        if n == 0:
            return np.ones(0, dtype=bool), 0, 0, pa.array([], pa.string())
        ids = good.column("event_id")
        content = lv.fingerprint(good.drop_columns(["event_id", "source_file"]), FEW_VALUES)
        # Within the chunk, exactly: the last row of each id wins.
        codes = lv.flat(ids).dictionary_encode().indices.to_numpy()
        order = np.lexsort((np.arange(n), codes))
        is_last = np.ones(n, dtype=bool)
        is_last[order[:-1]] = codes[order[:-1]] != codes[order[1:]]
        last_of = np.empty(codes.max() + 1, dtype=np.int64)
        last_of[codes[is_last]] = np.flatnonzero(is_last)
        dropped = ~is_last
        same = content[dropped] == content[last_of[codes[dropped]]]
        duplicates, restated = int(same.sum()), int((~same).sum())

        keep = is_last.copy()
        kept = np.flatnonzero(keep)
        id_hash = lv.hash_strings(lv.flat(ids).take(pa.array(kept)))
        before = self._lookup(id_hash)
        known = before != 0
        repeat = known & (before == _nonzero(content[kept]))
        keep[kept[repeat]] = False
        duplicates += int(repeat.sum())
        replaced = known & ~repeat
        restated += int(replaced.sum())
        stay = ~repeat
        self._add(id_hash[stay], _nonzero(content[kept][stay]))
        replaces = lv.flat(ids).take(pa.array(kept[replaced]))
        return keep, duplicates, restated, replaces

    def _lookup(self, hashes: np.ndarray) -> np.ndarray:
        """The stored content hash of each id hash (newest run first), 0 if never seen."""
        out = np.zeros(len(hashes), dtype=np.uint64)
        todo = np.ones(len(hashes), dtype=bool)
        order = np.argsort(hashes)  # sorted queries search the runs with far fewer cache misses
        hashes = hashes[order]
        for keys, values in reversed(self.runs):
            pos = np.searchsorted(keys, hashes)
            pos = np.minimum(pos, len(keys) - 1)
            hit = todo & (keys[pos] == hashes)
            out[hit] = values[pos[hit]]
            todo &= ~hit
        unsorted = np.empty_like(out)
        unsorted[order] = out
        return unsorted

    def _add(self, keys: np.ndarray, values: np.ndarray) -> None:
        if not len(keys):
            return
        order = np.argsort(keys, kind="stable")
        self.runs.append((keys[order], values[order]))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (k1, v1), (k2, v2) = self.runs[-2], self.runs.pop()
            keys, values = np.concatenate((k1, k2)), np.concatenate((v1, v2))
            order = np.argsort(keys, kind="stable")
            keys, values = keys[order], values[order]
            newest = np.ones(len(keys), dtype=bool)
            newest[:-1] = keys[:-1] != keys[1:]  # of equal keys, the later run's is last
            self.runs[-1] = (keys[newest], values[newest])


def _nonzero(h: np.ndarray) -> np.ndarray:
    """Content hashes with 0 reserved for "not seen"."""
    return np.where(h == 0, np.uint64(1), h)
