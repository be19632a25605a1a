"""Vectorized reading of logged values from Arrow arrays of whatever type a file gave them.

A log column may arrive as text (CSV), as a JSON number (float64, see `usage_shapes`), as a
typed Parquet column or not at all. Each function here takes such an array and returns numpy
values plus masks of the rows that are present and of the rows that are invalid, without a
Python loop over rows; only the few invalid rows are ever turned into Python objects (to show
them in a quarantine reason). Also here: RFC 3339 timestamps parsed by arithmetic (a bad date
never fails the whole array, as an Arrow cast would) and a 64-bit hash of strings for dedupe.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Float64 holds every integer up to 2**53 exactly; larger counts are never plausible anyway.
EXACT_FLOAT_INT = 2**53
_NUMBER = r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$"
_RFC3339 = (
    r"^\s*(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[Tt ](?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"(?P<f>\.\d{1,9})?(?P<off>[Zz]|[+-]\d{2}(?::?\d{2})?)\s*$"
)
_US_PER_DAY = 86_400_000_000


class Reasons:
    """Why rows are rejected, collected check by check; text is built for rejected rows only."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._checks: list[tuple[np.ndarray, str | Callable[[np.ndarray], list[str]]]] = []

    def add(self, rows: np.ndarray, message: str | Callable[[np.ndarray], list[str]]) -> None:
        """`message` is fixed text, or builds one text per row index of `rows` it is given."""
        if rows.any():
            self._checks.append((rows, message))

    def any(self) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        for rows, _ in self._checks:
            out |= rows
        return out

    def texts(self, rows: np.ndarray) -> list[str]:
        """The reasons of each row in `rows` (row indices), joined with '; '."""
        position = {int(r): i for i, r in enumerate(rows)}
        parts: list[list[str]] = [[] for _ in rows]
        for flagged, message in self._checks:
            hit = rows[flagged[rows]]
            if not len(hit):
                continue
            texts = [message] * len(hit) if isinstance(message, str) else message(hit)
            for r, t in zip(hit.tolist(), texts, strict=True):
                parts[position[r]].append(t)
        return ["; ".join(p) for p in parts]


UNREADABLE = "<unreadable value>"
SHOW_ERRORS = (pa.ArrowException, UnicodeError, ValueError, OverflowError)


def python_values(array: pa.Array, rows: np.ndarray) -> list:
    """The values at `rows` as Python objects, for messages; a value Arrow cannot turn into
    one (it has produced invalid UTF-8 in deeply nested JSON) is shown as unreadable."""
    if pa.types.is_nested(array.type):
        # Converting Arrow's nested JSON values back to Python has crashed the interpreter on
        # hostile input: name the kind of value instead (the raw line is quarantined anyway).
        kind = "an object" if pa.types.is_struct(array.type) else "a list"
        return [None if not array[int(r)].is_valid else f"<{kind}>" for r in rows]
    taken = array.take(pa.array(rows, pa.int64()))
    try:
        return taken.to_pylist()
    except SHOW_ERRORS:
        out = []
        for i in range(len(taken)):
            try:
                out.append(taken[i].as_py())
            except SHOW_ERRORS:
                out.append(UNREADABLE)
        return out


def nulls(n: int) -> pa.Array:
    return pa.nulls(n, pa.string())


def flat(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array. If Arrow cannot join the chunks (it fails on some nested null
    types), every row gets a value of no readable kind, so that the rows are rejected rather
    than read as absent."""
    if not isinstance(array, pa.ChunkedArray):
        return array
    if array.num_chunks == 1:
        return array.chunk(0)
    try:
        return array.combine_chunks()
    except pa.ArrowException:
        return pa.array([{"unreadable": True}] * len(array))


def mask(array: pa.Array) -> np.ndarray:
    """A boolean Arrow array as numpy, nulls as False."""
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def text(array: pa.Array | None, n: int) -> tuple[pa.Array, np.ndarray]:
    """(trimmed text, blank-as-null; rows holding a value that is not text (an object, a list))."""
    if array is None:
        return nulls(n), np.zeros(n, dtype=bool)
    array = flat(array)
    kind = array.type
    if pa.types.is_dictionary(kind):
        array, kind = array.cast(kind.value_type), kind.value_type
    if (
        pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_null(kind)
    ):
        array = array.cast(pa.string())
    elif not pa.types.is_string(kind):
        return nulls(n), np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    trimmed = pc.utf8_trim_whitespace(array)
    blank = pc.equal(trimmed, "")
    if pc.any(blank).as_py():
        trimmed = pc.if_else(blank, pa.scalar(None, pa.string()), trimmed)
    return trimmed, np.zeros(n, dtype=bool)


def counts(array: pa.Array | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values as float64 with NaN for absent, present mask, not-a-number mask) of a count.

    Integrality, sign and size are judged by the caller on the float values: every integer a
    plausible call can have is exact in float64, and a count too large for int64 (1e20) is
    simply a very large float rather than an overflow.
    """
    if array is None:
        return np.full(n, np.nan), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    array = flat(array)
    kind = array.type
    present = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_dictionary(kind):
        array, kind = array.cast(kind.value_type), kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = pc.cast(array, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        return np.where(present, values, np.nan), present, np.zeros(n, dtype=bool)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        trimmed = pc.utf8_trim_whitespace(array)
        present &= mask(pc.not_equal(trimmed, ""))
        numeric = mask(pc.match_substring_regex(trimmed, _NUMBER))
        kept = pc.if_else(pa.array(numeric), trimmed, pa.scalar(None, trimmed.type))
        values = pc.cast(kept, pa.float64()).to_numpy(zero_copy_only=False)
        return np.where(numeric, values, np.nan), present, present & ~numeric
    if pa.types.is_null(kind):
        return np.full(n, np.nan), present, present
    return np.full(n, np.nan), present, present  # true/false, objects, lists: not counts


def booleans(array: pa.Array | None, n: int) -> tuple[pa.Array, np.ndarray]:
    """(boolean values, invalid mask): true/false, or the words true/false/1/0 in text."""
    if array is None:
        return pa.nulls(n, pa.bool_()), np.zeros(n, dtype=bool)
    array = flat(array)
    kind = array.type
    if pa.types.is_boolean(kind):
        return array, np.zeros(n, dtype=bool)
    if pa.types.is_null(kind):
        return pa.nulls(n, pa.bool_()), np.zeros(n, dtype=bool)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        array = pc.cast(array, pa.float64()).cast(pa.string())
        array = pc.replace_substring_regex(array, r"\.0$", "")
    elif not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return pa.nulls(n, pa.bool_()), mask(array.is_valid())
    words = pc.utf8_lower(pc.utf8_trim_whitespace(array))
    is_true = pc.is_in(words, pa.array(["true", "1"]))
    is_false = pc.is_in(words, pa.array(["false", "0"]))
    blank = pc.equal(words, "")
    value = pc.if_else(is_true, True, pc.if_else(is_false, False, pa.scalar(None, pa.bool_())))
    invalid = mask(array.is_valid()) & ~mask(is_true) & ~mask(is_false) & ~mask(blank)
    return value, invalid


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def timestamps(array: pa.Array | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(UTC microseconds since the epoch, present mask, invalid mask) of RFC 3339 text.

    An offset is required: a naive timestamp would silently be read as UTC and shift a tenant's
    day. Dates are checked field by field (month 13, 31 September, hour 25 are invalid).
    """
    if array is None:
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    if pa.types.is_timestamp(flat(array).type):  # a typed Parquet column
        array = flat(array)
        present = mask(array.is_valid())
        if array.type.tz is None:
            return np.zeros(n, dtype=np.int64), present, present
        as_us = pc.cast(array, pa.timestamp("us", "UTC"), safe=False).cast(pa.int64())
        return pc.fill_null(as_us, 0).to_numpy(), present, np.zeros(n, dtype=bool)
    values, not_text = text(array, n)
    present = mask(values.is_valid()) | not_text
    if not not_text.any():
        try:  # Arrow's own parser: strict (offset required, real dates), and 30x faster
            stamps = pc.cast(values, pa.timestamp("us", "UTC"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # some value is odd (or only spelled unusually, "z"): check field by field
        else:
            us = pc.fill_null(stamps.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
            return us, present, np.zeros(n, dtype=bool)
    parts = pc.extract_regex(values, _RFC3339)
    matched = mask(parts.is_valid())

    def num(name: str) -> np.ndarray:
        field = pc.if_else(pa.array(matched), pc.struct_field(parts, name), "0")
        return pc.cast(field, pa.int64()).to_numpy(zero_copy_only=False)

    y, mo, d, h, mi, s = (num(k) for k in ("y", "mo", "d", "h", "mi", "s"))
    off = pc.if_else(pa.array(matched), pc.struct_field(parts, "off"), "Z")
    zulu = mask(pc.equal(pc.utf8_upper(off), "Z"))
    off_digits = pc.replace_substring(pc.utf8_slice_codeunits(off, 1), ":", "")
    off_digits = pc.if_else(pa.array(zulu), "0000", pc.utf8_rpad(off_digits, 4, "0"))
    off_num = pc.cast(off_digits, pa.int64()).to_numpy(zero_copy_only=False)
    sign = np.where(mask(pc.starts_with(off, "-")), -1, 1)
    offset_min = sign * (off_num // 100 * 60 + off_num % 100)
    frac = pc.fill_null(pc.struct_field(parts, "f"), "")
    frac = pc.utf8_slice_codeunits(pc.utf8_rpad(pc.utf8_slice_codeunits(frac, 1), 6, "0"), 0, 6)
    micros = pc.cast(frac, pa.int64()).to_numpy(zero_copy_only=False)

    month_ok = (mo >= 1) & (mo <= 12)
    safe_mo = np.where(month_ok, mo, 1)
    first = _days_from_civil(y, safe_mo, np.ones_like(d))
    next_first = _days_from_civil(y + (safe_mo == 12), safe_mo % 12 + 1, np.ones_like(d))
    valid = (
        matched
        & month_ok
        & (d >= 1)
        & (d <= next_first - first)
        & (h <= 23)
        & (mi <= 59)
        & (s <= 59)
        & (off_num // 100 <= 23)
        & (off_num % 100 <= 59)
    )
    days = first + d - 1
    seconds = days * 86_400 + h * 3_600 + mi * 60 + s - offset_min * 60
    us = np.where(valid, seconds * 1_000_000 + micros, 0)
    return us, present, present & ~valid


def epoch_nanos(array: pa.Array | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(UTC microseconds, present, invalid) of OTLP's `startTimeUnixNano` (number or text)."""
    if array is None:
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    values, present, bad = counts(array, n)
    ok = present & ~bad & np.isfinite(values) & (values > 0) & (values < 2**63)
    if array is not None and (pa.types.is_string(flat(array).type)):
        # Text keeps every digit: a float64 of nanoseconds would lose the microseconds.
        digits = pc.utf8_trim_whitespace(flat(array))
        whole = mask(pc.match_substring_regex(digits, r"^\d{1,19}$"))
        ok &= whole
        kept = pc.if_else(pa.array(ok), digits, "0")
        ns = pc.cast(kept, pa.uint64()).to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        ns = np.where(ok, values, 0).astype(np.int64)
    return ns // 1_000, present, present & ~ok


def days_of(us: np.ndarray) -> np.ndarray:
    return np.floor_divide(us, _US_PER_DAY).astype(np.int32)


# -- hashing --------------------------------------------------------------------------------

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit affects every output bit."""
    h = h ^ (h >> np.uint64(30))
    h = h * _M2
    h = h ^ (h >> np.uint64(27))
    h = h * _M3
    return h ^ (h >> np.uint64(31))


def hash_strings(array: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string (null hashes apart from ""), without Python objects.

    The bytes of each string are gathered into a fixed-width matrix of 64-bit words (width of
    the longest string), which is folded column by column; ids are short, so this is a few
    passes over memory.
    """
    array = flat(array)
    n = len(array)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    fixed = _hash_padded(array)
    if fixed is not None:
        return fixed
    array = array.cast(pa.large_string())
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[array.offset : array.offset + n + 1]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    lengths = np.diff(offsets)
    valid = mask(array.is_valid())
    lengths = np.where(valid, lengths, 0)
    h = mix(lengths.astype(np.uint64) * _M2 + np.where(valid, _M1, _M3))
    width = int(lengths.max()) if n else 0
    step = 64  # bytes per pass: bounds the temporary matrix to n x 64 bytes
    for start in range(0, width, step):
        span = min(step, width - start)
        cols = np.arange(span, dtype=np.int64) + start
        inside = cols[None, :] < lengths[:, None]
        rows = np.flatnonzero(inside.any(axis=1))
        if not len(rows):
            break
        index = offsets[rows, None] + cols[None, :]
        block = np.zeros((len(rows), (span + 7) // 8 * 8), dtype=np.uint8)
        sub = inside[rows]
        block[:, :span][sub] = data[index[sub]]
        words = block.view(np.uint64)
        acc, reach = h[rows], lengths[rows]
        for w in range(words.shape[1]):
            acc = _fold(acc, words[:, w], reach > start + 8 * w)
        h[rows] = acc
    return mix(h)


def _hash_padded(array: pa.Array) -> np.ndarray | None:
    """The fast case: ASCII-width strings NUL-padded by Arrow to one width, read as words."""
    valid = mask(array.is_valid())
    lengths = pc.fill_null(pc.binary_length(array), 0).to_numpy(zero_copy_only=False)
    width = (int(lengths.max()) + 7) // 8 * 8
    if width == 0 or width > 256:
        return None
    padded = flat(pc.utf8_rpad(pc.fill_null(array, ""), width, "\x00"))
    _, offsets_buf, data_buf = padded.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[
        padded.offset : padded.offset + len(array) + 1
    ]
    if not (np.diff(offsets) == width).all():  # multi-byte characters: padded by code points
        return None
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]]
    words = data.view(np.uint64).reshape(len(array), width // 8)
    h = mix(lengths.astype(np.uint64) * _M2 + np.where(valid, _M1, _M3))
    for w in range(words.shape[1]):
        h = _fold(h, words[:, w], lengths > 8 * w)
    return mix(h)


def _fold(h: np.ndarray, word: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Fold one 8-byte word into the hashes of the strings that reach it (so a string's hash
    never depends on the other strings of the array); `mix` finishes the hash."""
    x = h ^ word
    x *= _M1
    x ^= x >> np.uint64(29)
    return x if active.all() else np.where(active, x, h)


def hash_column(array: pa.Array) -> np.ndarray:
    """A 64-bit hash of each value of a column of any simple type (nulls hash alike)."""
    array = flat(array)
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return hash_strings(array)
    valid = mask(array.is_valid())
    if pa.types.is_boolean(kind):
        raw = pc.fill_null(array, False).to_numpy(zero_copy_only=False).astype(np.uint64) + 1
    elif pa.types.is_floating(kind):  # seconds: the float's bits (a cast would truncate 61.5)
        values = pc.fill_null(array.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        raw = np.ascontiguousarray(values).view(np.uint64)
    else:
        if pa.types.is_temporal(kind):
            array = array.view(pa.int64() if kind.bit_width == 64 else pa.int32())
        as_int = array.cast(pa.int64()) if not pa.types.is_integer(kind) else array
        raw = pc.fill_null(as_int, 0).to_numpy(zero_copy_only=False).astype(np.uint64)
    return mix(np.where(valid, raw * _M2 + np.uint64(1), _M3))


def fingerprint(table: pa.Table, few: Collection[str]) -> np.ndarray:
    """`hash_rows`, faster: the columns in `few` (few distinct values) are hashed once per
    distinct value through a dictionary."""
    h = np.zeros(table.num_rows, dtype=np.uint64)
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            part = hash_column(column)
        elif name in few:
            encoded = flat(column).dictionary_encode()
            codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
            values = np.append(hash_strings(encoded.dictionary), _M3)
            part = values[codes]
        else:
            part = hash_strings(column)
        h = mix((h * _M1) ^ part)
    return h
