"""The usage shapes an interaction log may hold, mapped to the canonical `llm_interactions` row.

Apps log what their SDK hands them. Besides the documented canonical record, a record may carry
its usage in any of these shapes (all vectorized over an Arrow table of parsed records):

- canonical / flat: top-level `input_tokens` (the TOTAL input, cache reads and writes included),
  `cache_read_tokens`, `cache_write_tokens`, `cache_write_1h_tokens`, `output_tokens`,
  `reasoning_tokens`, `web_search_requests`. OpenAI's Responses API usage is the same
  convention, so `input_tokens_details.cached_tokens` and `output_tokens_details.reasoning_tokens`
  are read as cache reads and reasoning tokens.
- OpenAI Chat Completions: `prompt_tokens` (includes cached), `completion_tokens` (includes
  reasoning), `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`.
- Anthropic Messages: `input_tokens` EXCLUDES the cache, so total input = `input_tokens` +
  `cache_creation_input_tokens` + `cache_read_input_tokens`; 1-hour writes are
  `cache_creation.ephemeral_1h_input_tokens`, the rest are 5-minute writes;
  `server_tool_use.web_search_requests`.
- OpenTelemetry GenAI spans (JSON Lines export, `attributes` as an object): `gen_ai.usage.
  input_tokens` (includes cached, per the semantic conventions), `gen_ai.usage.output_tokens`,
  `gen_ai.usage.cache_read.input_tokens`, `gen_ai.usage.cache_creation.input_tokens`,
  `gen_ai.usage.reasoning.output_tokens` (legacy `gen_ai.usage.prompt_tokens` /
  `completion_tokens` too); provider from `gen_ai.provider.name` or `gen_ai.system`, model from
  `gen_ai.response.model` or `gen_ai.request.model`, event id = span id, parent = parent span
  id, time = span start (`start_time` text or `startTimeUnixNano`), latency = end - start.

The OpenAI and Anthropic shapes may sit at the top level or in a `usage` object.

Which shape a record is, decided per record: a record with `gen_ai.usage.*` attributes is an
OTel span; a usage node (the `usage` object, or the top level) with `cache_creation_input_tokens`,
`cache_read_input_tokens` or `cache_creation` is Anthropic's convention, with `prompt_tokens` or
`completion_tokens` it is Chat Completions, with any other token field it is canonical. The
first present in the order OTel, `usage` (Anthropic, Chat, canonical), top level (the same) wins;
when a record holds several shapes they must give the same canonical counts, or the record is
quarantined (which one is right cannot be known). A record with no token field at all is
quarantined as `no usage`, never loaded as zero tokens.

Usage beyond tokens is read from any shape, the first present of: the top level, the `usage`
object, the span attributes (this pipeline's names, no OTel convention has them):

| column            | top level / `usage`                 | span attribute                    |
|-------------------|-------------------------------------|-----------------------------------|
| characters        | `characters`                        | `gen_ai.usage.characters`         |
| audio_seconds     | `audio_seconds`, `usage.seconds`    | `gen_ai.usage.audio_seconds`      |
| video_seconds     | `video_seconds`                     | `gen_ai.usage.video_seconds`      |
| images            | `images`                            | `gen_ai.usage.images`             |
| image_size        | `image_size` (top level)            | `gen_ai.request.image_size`       |
| image_quality     | `image_quality` (top level)         | `gen_ai.request.image_quality`    |
| requests          | `requests`                          | `gen_ai.usage.requests`           |
| reported_cost_usd | `cost_usd`                          | `gen_ai.usage.cost_usd`           |

(`usage.seconds` is OpenAI's transcription usage `{"type": "duration", "seconds": 3}`.) Counts
(characters, images, requests) are integers, seconds and the cost non-negative numbers; a value
given in two places must agree. A record with one of them and no token counts has usage.

Canonical fields at the top level always win over span attributes; `id` stands in for a missing
`event_id` (the response id of OpenAI and Anthropic). Provider names are normalized: lower case,
and OTel's `gen_ai.system` values mapped to price-catalogue ids (`aws.bedrock` -> `aws`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from genai_prices.types import TieredPrices

from cost_pipeline.lib import log_values as lv
from cost_pipeline.lib.rate_card import find_model
from cost_pipeline.lib.schemas import TOKEN_COLUMNS

TEXT, NUM = pa.string(), pa.float64()
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
CANONICAL_TEXT = (
    "event_id",
    "tenant_id",
    "user_id",
    "agent_id",
    "workflow_id",
    "parent_event_id",
    "provider",
    "model",
    "service_tier",
    "status",
)
OTEL_USAGE = {
    "input": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    "output": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    "cache_read": ("gen_ai.usage.cache_read.input_tokens",),
    "cache_write": ("gen_ai.usage.cache_creation.input_tokens",),
    "reasoning": ("gen_ai.usage.reasoning.output_tokens",),
}
# Units beyond tokens: the column, then where it may be logged (first present wins).
UNIT_SOURCES: dict[str, tuple[tuple[str, ...], ...]] = {
    "characters": (
        ("characters",),
        ("usage", "characters"),
        ("attributes", "gen_ai.usage.characters"),
    ),
    "audio_seconds": (
        ("audio_seconds",),
        ("usage", "audio_seconds"),
        ("usage", "seconds"),
        ("attributes", "gen_ai.usage.audio_seconds"),
    ),
    "video_seconds": (
        ("video_seconds",),
        ("usage", "video_seconds"),
        ("attributes", "gen_ai.usage.video_seconds"),
    ),
    "images": (("images",), ("usage", "images"), ("attributes", "gen_ai.usage.images")),
    "requests": (("requests",), ("usage", "requests"), ("attributes", "gen_ai.usage.requests")),
    "reported_cost_usd": (
        ("cost_usd",),
        ("usage", "cost_usd"),
        ("attributes", "gen_ai.usage.cost_usd"),
    ),
}
WHOLE_UNITS = ("characters", "images", "requests")
UNIT_TEXT = {
    "image_size": (("image_size",), ("attributes", "gen_ai.request.image_size")),
    "image_quality": (("image_quality",), ("attributes", "gen_ai.request.image_quality")),
}
OTEL_TEXT = (
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.agent.name",
    "gen_ai.agent.id",
    "tenant.id",
    "tenant_id",
    "user.id",
    "enduser.id",
    "gen_ai.request.image_size",
    "gen_ai.request.image_quality",
)
PROVIDER_ALIASES = {
    "aws.bedrock": "aws",
    "az.ai.openai": "azure",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "gemini": "google",
    "vertex_ai": "google",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "moonshot": "moonshotai",
}


def _struct(*names: str, kind: pa.DataType = NUM) -> pa.StructType:
    return pa.struct([(name, kind) for name in names])


USAGE_FIELDS = [
    *((name, NUM) for name in TOKEN_COLUMNS),
    ("prompt_tokens", NUM),
    ("completion_tokens", NUM),
    ("prompt_tokens_details", _struct("cached_tokens")),
    ("completion_tokens_details", _struct("reasoning_tokens")),
    ("input_tokens_details", _struct("cached_tokens")),
    ("output_tokens_details", _struct("reasoning_tokens")),
    ("cache_creation_input_tokens", NUM),
    ("cache_read_input_tokens", NUM),
    ("cache_creation", _struct("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")),
    ("server_tool_use", _struct("web_search_requests")),
]


def _unit_fields(where: str) -> list[str]:
    """Names of the unit fields read at the top level (`""`), in `usage` or in `attributes`."""
    paths = [p for paths in UNIT_SOURCES.values() for p in paths]
    return [p[-1] for p in paths if (p[0] if len(p) > 1 else "") == where]


OTEL_ATTRIBUTES = pa.struct(
    [
        *((n, NUM) for names in OTEL_USAGE.values() for n in names),
        *((n, NUM) for n in _unit_fields("attributes")),
        *((n, TEXT) for n in OTEL_TEXT),
    ]
)
# What the JSON reader extracts (everything else in a record is ignored). Counts are float64 so
# that 10.0, 1e20 or a 20-digit integer parse, and are judged here rather than failing a block.
LOG_SCHEMA = pa.schema(
    [
        *((name, TEXT) for name in CANONICAL_TEXT),
        ("occurred_at", TEXT),
        ("batch", pa.bool_()),
        ("latency_ms", NUM),
        *USAGE_FIELDS,
        *((n, NUM) for n in _unit_fields("")),
        *((name, TEXT) for name in UNIT_TEXT),
        (
            "usage",
            pa.struct([*USAGE_FIELDS, *((n, NUM) for n in _unit_fields("usage"))]),
        ),
        ("id", TEXT),
        ("attributes", OTEL_ATTRIBUTES),
        ("context", _struct("trace_id", "span_id", kind=TEXT)),
        ("parent_id", TEXT),
        ("start_time", TEXT),
        ("end_time", TEXT),
        ("traceId", TEXT),
        ("spanId", TEXT),
        ("parentSpanId", TEXT),
        ("startTimeUnixNano", TEXT),
        ("endTimeUnixNano", TEXT),
    ]
)


def span_status_text(status: pa.Array) -> pa.Array:
    """OTel's span `status` object as text: "error" for an error status, else "ok"."""
    kind = status.type
    names = [n for n in ("status_code", "code") if kind.get_field_index(n) >= 0]
    codes = [pc.utf8_upper(pc.cast(pc.struct_field(status, n), pa.string())) for n in names]
    code = pc.coalesce(*codes) if codes else pa.nulls(len(status), pa.string())
    is_error = pc.or_(pc.match_substring(code, "ERROR"), pc.equal(code, "2"))
    return pc.if_else(
        pc.fill_null(is_error, False), "error", pc.if_else(status.is_valid(), "ok", None)
    )


def otlp_attributes(attributes: pa.Array) -> pa.Array:
    """OTLP/JSON's attribute list (`[{key, value: {intValue: "12"}}]`) as the attribute object
    of the fields read here (values as text; counts are read from text like CSV's)."""
    n = len(attributes)
    items = pc.list_flatten(attributes)
    parents = pc.list_parent_indices(attributes).to_numpy(zero_copy_only=False)
    if not pa.types.is_struct(items.type) or items.type.get_field_index("key") < 0:
        return pa.nulls(n, OTEL_ATTRIBUTES)
    keys = pc.struct_field(items, "key")
    value = pc.struct_field(items, "value") if items.type.get_field_index("value") >= 0 else None
    texts = []
    if value is not None and pa.types.is_struct(value.type):
        for kind in ("stringValue", "intValue", "doubleValue", "boolValue"):
            if value.type.get_field_index(kind) >= 0:
                texts.append(pc.cast(pc.struct_field(value, kind), pa.string()))
    joined = pc.coalesce(*texts) if texts else pa.nulls(len(items), pa.string())
    children = []
    for f in OTEL_ATTRIBUTES:
        hit = np.flatnonzero(lv.mask(pc.equal(keys, f.name)))
        out = np.full(n, None, dtype=object)
        out[parents[hit]] = joined.take(pa.array(hit)).to_numpy(zero_copy_only=False)
        children.append(pa.array(out, pa.string()))
    names = [f.name for f in OTEL_ATTRIBUTES]
    return pa.StructArray.from_arrays(children, names=names, mask=pc.invert(attributes.is_valid()))


def normalize(table: pa.Table) -> pa.Table:
    """Turn the object forms of OTel exports into what `canonical` reads: `status` objects
    into text, OTLP attribute lists into an attribute object."""
    for name, convert, test in (
        ("status", span_status_text, pa.types.is_struct),
        ("attributes", otlp_attributes, pa.types.is_list),
    ):
        if name in table.column_names and test(table.schema.field(name).type):
            index = table.column_names.index(name)
            table = table.set_column(index, name, convert(lv.flat(table.column(name))))
    return table


@dataclass
class Canonical:
    """Canonical columns of a chunk (values of rejected rows are meaningless)."""

    text: dict[str, pa.Array]
    occurred_us: np.ndarray
    occurred_ok: np.ndarray
    tokens: dict[str, np.ndarray]
    latency_ms: np.ndarray
    latency_present: np.ndarray
    batch: pa.Array
    # Units beyond tokens (`UNIT_SOURCES`): float64 values, NaN where the record does not say.
    units: dict[str, np.ndarray]


class _Fields:
    """Access to (possibly nested) fields of the parsed records, checked once per field."""

    def __init__(self, table: pa.Table, reasons: lv.Reasons, max_tokens: int) -> None:
        self.table = table
        self.n = table.num_rows
        self.reasons = reasons
        self.max_tokens = max_tokens
        self._counts: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._arrays: dict[tuple[str, ...], pa.Array | None] = {}

    def get(self, path: Sequence[str]) -> pa.Array | None:
        key = tuple(path)
        if key not in self._arrays:
            self._arrays[key] = self._get(key)
        return self._arrays[key]

    def _get(self, path: tuple[str, ...]) -> pa.Array | None:
        if path[0] not in self.table.column_names:
            return None
        array = lv.flat(self.table.column(path[0]))
        for name in path[1:]:
            if not pa.types.is_struct(array.type) or array.type.get_field_index(name) < 0:
                return None
            array = pc.struct_field(array, name)
        return array if not pa.types.is_null(array.type) else None

    def text(self, *paths: Sequence[str]) -> pa.Array:
        """The first present, non-blank value of the given fields."""
        out: pa.Array | None = None
        for path in paths:
            values, not_text = lv.text(self.get(path), self.n)
            label = ".".join(path)
            self.reasons.add(
                not_text, lambda rows, p=path, lb=label: self._shown(p, rows, f"{lb} is not text")
            )
            out = values if out is None else pc.coalesce(out, values)
        return out if out is not None else lv.nulls(self.n)

    def count(self, path: Sequence[str], *, tokens: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(int64 values, 0 where absent or invalid; present mask), reasons recorded.

        Token counts above the per-call ceiling are implausible; other counts (latency) are
        only kept within the range float64 holds exactly.
        """
        key = tuple(path)
        if key in self._counts:
            return self._counts[key]
        values, present, not_number = lv.counts(self.get(path), self.n)
        label = ".".join(path)
        shown = self._shown
        self.reasons.add(not_number, lambda rows: shown(key, rows, f"{label} is not an integer"))
        numeric = present & ~not_number
        with np.errstate(invalid="ignore"):
            fractional = numeric & ~(np.isfinite(values) & (values == np.floor(values)))
            negative = numeric & ~fractional & (values < 0)
            limit = self.max_tokens if tokens else lv.EXACT_FLOAT_INT
            huge = numeric & ~fractional & (values > limit)
        self.reasons.add(fractional, lambda rows: shown(key, rows, f"{label} is not an integer"))
        self.reasons.add(negative, lambda rows: shown(key, rows, f"{label} is negative"))
        why = (
            f"implausible_usage: {label} is above the ceiling of {self.max_tokens:,} per call"
            if tokens
            else f"{label} is too large"
        )
        self.reasons.add(huge, lambda rows: shown(key, rows, why))
        ok = numeric & ~fractional & ~negative & ~huge
        result = np.where(ok, values, 0).astype(np.int64), present
        self._counts[key] = result
        return result

    def amount(self, path: Sequence[str], limit: float, why: str) -> tuple[np.ndarray, np.ndarray]:
        """(float64 values, NaN where absent or invalid; present mask) of a non-negative
        number that may have a fraction (seconds, USD); above `limit` is `why`."""
        values, present, not_number = lv.counts(self.get(path), self.n)
        label = ".".join(path)
        key = tuple(path)
        shown = self._shown
        numeric = present & ~not_number
        with np.errstate(invalid="ignore"):
            infinite = numeric & ~np.isfinite(values)
            negative = numeric & ~infinite & (values < 0)
            huge = numeric & ~infinite & ~negative & (values > limit)
        self.reasons.add(
            not_number | infinite, lambda rows: shown(key, rows, f"{label} is not a number")
        )
        self.reasons.add(negative, lambda rows: shown(key, rows, f"{label} is negative"))
        self.reasons.add(huge, lambda rows: shown(key, rows, f"implausible_usage: {label} {why}"))
        ok = numeric & ~infinite & ~negative & ~huge
        return np.where(ok, values, np.nan), present

    def _shown(self, path: Sequence[str], rows: np.ndarray, prefix: str) -> list[str]:
        array = self.get(path)
        values = lv.python_values(array, rows) if array is not None else [None] * len(rows)
        return [f"{prefix}: {_show(v)}" for v in values]


def _show(value: object) -> str:
    """A logged value as written: numbers bare (also numbers in text, as CSV gives them)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        value = int(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return value.strip()
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_CANON = ("input", "cache_read", "cache_write", "cache_write_1h", "output", "reasoning", "web")


def _shapes(f: _Fields, node: tuple[str, ...]) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """(present mask, canonical counts) of the Anthropic, Chat and flat shapes of one node."""
    n = f.n
    zero = np.zeros(n, dtype=np.int64)

    def c(*names: str) -> tuple[np.ndarray, np.ndarray]:
        return f.count((*node, *names))

    def first(*options: tuple[np.ndarray, np.ndarray], label: str) -> np.ndarray:
        """The first given of alternative spellings; they must agree when both are given."""
        out, given = options[0]
        for values, present in options[1:]:
            clash = given & present & (out != values)
            f.reasons.add(clash, f"{label} is given twice with different values")
            out = np.where(given, out, values)
            given = given | present
        return out

    inp, inp_p = c("input_tokens")
    out, out_p = c("output_tokens")
    web = first(
        c("web_search_requests"),
        c("server_tool_use", "web_search_requests"),
        label="web_search_requests",
    )
    web_p = c("web_search_requests")[1] | c("server_tool_use", "web_search_requests")[1]

    creation, creation_p = c("cache_creation_input_tokens")
    read, read_p = c("cache_read_input_tokens")
    e5, e5_p = c("cache_creation", "ephemeral_5m_input_tokens")
    e1h, e1h_p = c("cache_creation", "ephemeral_1h_input_tokens")
    anthropic = creation_p | read_p | e5_p | e1h_p
    split_p = e5_p | e1h_p
    mismatch = creation_p & split_p & (e5 + e1h != creation)
    f.reasons.add(
        mismatch,
        "cache_creation.ephemeral_5m_input_tokens + ephemeral_1h_input_tokens differs from "
        "cache_creation_input_tokens",
    )
    writes = np.where(creation_p, creation, e5 + e1h)
    anthropic_counts = {
        "input": inp + writes + read,
        "cache_read": read,
        "cache_write": writes - e1h,
        "cache_write_1h": e1h,
        "output": out,
        "reasoning": zero,
        "web": web,
    }

    prompt, prompt_p = c("prompt_tokens")
    completion, completion_p = c("completion_tokens")
    chat_counts = {
        "input": prompt,
        "cache_read": c("prompt_tokens_details", "cached_tokens")[0],
        "cache_write": zero,
        "cache_write_1h": zero,
        "output": completion,
        "reasoning": c("completion_tokens_details", "reasoning_tokens")[0],
        "web": web,
    }

    cr = [c("cache_read_tokens"), c("input_tokens_details", "cached_tokens")]
    rs = [c("reasoning_tokens"), c("output_tokens_details", "reasoning_tokens")]
    cw, cw_p = c("cache_write_tokens")
    cw1, cw1_p = c("cache_write_1h_tokens")
    flat_p = inp_p | out_p | cw_p | cw1_p | web_p | cr[0][1] | cr[1][1] | rs[0][1] | rs[1][1]
    flat_counts = {
        "input": inp,
        "cache_read": first(*cr, label="cache_read_tokens"),
        "cache_write": cw,
        "cache_write_1h": cw1,
        "output": out,
        "reasoning": first(*rs, label="reasoning_tokens"),
        "web": web,
    }
    return [
        (anthropic, anthropic_counts),
        (prompt_p | completion_p, chat_counts),
        (flat_p & ~anthropic, flat_counts),
    ]


def _otel_shape(f: _Fields) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    zero = np.zeros(f.n, dtype=np.int64)
    present = np.zeros(f.n, dtype=bool)
    counts: dict[str, np.ndarray] = {}
    for key, names in OTEL_USAGE.items():
        values, given = zero, np.zeros(f.n, dtype=bool)
        for name in names:
            v, p = f.count(("attributes", name))
            values = np.where(given, values, v)
            given |= p
        counts[key] = values
        present |= given
    counts |= {"cache_write_1h": zero, "web": zero}
    return present, counts


def normalize_provider(provider: pa.Array) -> pa.Array:
    lowered = pc.utf8_lower(provider)
    encoded = lowered.dictionary_encode()
    names = [PROVIDER_ALIASES.get(v, v) for v in encoded.dictionary.to_pylist()]
    return pa.array(names, pa.string()).take(encoded.indices)


def _units(f: _Fields, max_cost: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each unit of `UNIT_SOURCES` (NaN: not given, or invalid) and the rows that give any;
    places that disagree are a reason."""
    out: dict[str, np.ndarray] = {}
    any_given = np.zeros(f.n, dtype=bool)
    for unit, paths in UNIT_SOURCES.items():
        chosen = np.full(f.n, np.nan)
        given = np.zeros(f.n, dtype=bool)
        clash = np.zeros(f.n, dtype=bool)
        for path in paths:
            if unit in WHOLE_UNITS:
                counts, present = f.count(path)
                values = np.where(present, counts.astype(np.float64), np.nan)
            elif unit == "reported_cost_usd":
                values, present = f.amount(
                    path, max_cost, f"is above the ceiling of ${max_cost:,.2f} per call"
                )
            else:
                ceiling = f.max_tokens
                values, present = f.amount(
                    path, ceiling, f"is above the ceiling of {ceiling:,} per call"
                )
            clash |= given & present & (values != chosen) & ~np.isnan(values) & ~np.isnan(chosen)
            chosen = np.where(given, chosen, values)
            given |= present
        f.reasons.add(clash, f"{unit} is given twice with different values")
        out[unit] = chosen
        any_given |= given
    return out, any_given


def canonical(
    table: pa.Table, reasons: lv.Reasons, *, max_tokens: int, max_cost: float = 1000.0
) -> Canonical:
    """Canonical columns of `table` (parsed records of any shape); problems go to `reasons`.

    `max_tokens` bounds every count (tokens, characters, images, requests, seconds) and
    `max_cost` an app-reported cost (USD) of one call."""
    f = _Fields(table, reasons, max_tokens)
    n = f.n
    a = "attributes"
    text = {
        "event_id": f.text(("event_id",), ("id",), ("context", "span_id"), ("spanId",)),
        "tenant_id": f.text(("tenant_id",), (a, "tenant.id"), (a, "tenant_id")),
        "user_id": f.text(("user_id",), (a, "user.id"), (a, "enduser.id")),
        "agent_id": f.text(("agent_id",), (a, "gen_ai.agent.name"), (a, "gen_ai.agent.id")),
        "workflow_id": f.text(("workflow_id",)),
        "parent_event_id": f.text(("parent_event_id",), ("parent_id",), ("parentSpanId",)),
        "provider": f.text(("provider",), (a, "gen_ai.provider.name"), (a, "gen_ai.system")),
        "model": f.text(("model",), (a, "gen_ai.response.model"), (a, "gen_ai.request.model")),
        "service_tier": f.text(("service_tier",)),
        "status": f.text(("status",)),
        **{name: f.text(*paths) for name, paths in UNIT_TEXT.items()},
    }
    text["provider"] = normalize_provider(text["provider"])

    # Time: canonical text, else the span's start (text or Unix nanoseconds).
    us, present, bad = lv.timestamps(f.get(("occurred_at",)), n)
    for start, parse in (("start_time", lv.timestamps), ("startTimeUnixNano", lv.epoch_nanos)):
        s_us, s_present, s_bad = parse(f.get((start,)), n)
        use = ~present & s_present
        us, bad, present = np.where(use, s_us, us), np.where(use, s_bad, bad), present | s_present
    raw_time = pc.coalesce(
        *(lv.text(f.get((k,)), n)[0] for k in ("occurred_at", "start_time", "startTimeUnixNano"))
    )
    reasons.add(~present, "occurred_at is missing or empty")
    reasons.add(
        bad,
        lambda rows: [
            f"occurred_at {_show(v)} is not an RFC 3339 timestamp with a UTC offset"
            for v in lv.python_values(raw_time, rows)
        ],
    )

    latency, latency_p = f.count(("latency_ms",), tokens=False)
    end_us, end_present, end_bad = lv.timestamps(f.get(("end_time",)), n)
    e2, e2_present, e2_bad = lv.epoch_nanos(f.get(("endTimeUnixNano",)), n)
    end_us = np.where(end_present, end_us, e2)
    span_end = (end_present & ~end_bad) | (e2_present & ~e2_bad)
    derive = ~latency_p & span_end & present & ~bad & (end_us >= us)
    latency = np.where(derive, (end_us - us) // 1000, latency)
    latency_p = latency_p | derive

    shapes = [_otel_shape(f), *_shapes(f, ("usage",)), *_shapes(f, ())]
    chosen = {k: np.zeros(n, dtype=np.int64) for k in _CANON}
    found = np.zeros(n, dtype=bool)
    for shape_present, counts in shapes:
        take = shape_present & ~found
        for k in _CANON:
            chosen[k] = np.where(take, counts[k], chosen[k])
        found |= shape_present
    disagree = np.zeros(n, dtype=bool)
    for shape_present, counts in shapes:
        differs = np.zeros(n, dtype=bool)
        for k in _CANON:
            differs |= counts[k] != chosen[k]
        disagree |= shape_present & differs
    reasons.add(
        disagree,
        "usage is given in more than one shape (e.g. top-level and `usage`) with different counts",
    )
    units, units_given = _units(f, max_cost)
    found |= units_given
    reasons.add(
        ~found,
        "no usage: the record has no token counts in any known shape (input_tokens, "
        "usage.prompt_tokens, usage.input_tokens, gen_ai.usage.input_tokens, ...) and no "
        "other usage (characters, audio_seconds, video_seconds, images, requests, cost_usd)",
    )
    tokens = dict(zip(TOKEN_COLUMNS, (chosen[k] for k in _CANON), strict=True))
    batch, bad_batch = lv.booleans(f.get(("batch",)), n)
    reasons.add(bad_batch, lambda rows: f._shown(("batch",), rows, "batch is not true or false"))
    return Canonical(
        text=text,
        occurred_us=us,
        occurred_ok=present & ~bad,
        tokens=tokens,
        latency_ms=latency,
        latency_present=latency_p,
        batch=batch,
        units=units,
    )


@cache
def context_window(provider: str, model: str) -> int | None:
    """The model's listed context window (offline genai-prices snapshot), if it is a hard one.

    None when the model is not listed, lists no window, or has long-context price tiers (its
    real window is larger than the listed one).
    """
    found = find_model(provider, model)
    if found is None or not found[1].context_window:
        return None
    prices = found[1].prices
    for entry in prices if isinstance(prices, list) else [prices]:
        price = getattr(entry, "prices", entry)
        if any(isinstance(v, TieredPrices) for v in vars(price).values()):
            return None
    return int(found[1].context_window)
