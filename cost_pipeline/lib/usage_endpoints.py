"""The providers' usage endpoints that bill money, their native units, and their cost line items.

One registry says, for every usage endpoint the pipeline pulls, its path, the result object it
answers with, the grouping fields it accepts, the unit it bills and the counters its results
carry (OpenAI's organization Usage API; Anthropic's messages usage report). The normalizers,
the admin client, the fake and the line-item reconciliation all read it, so an endpoint is
described once.

`ledger_priced` says whether the ledger's own (token) pricing engine prices the unit: tokens
are; images, characters, seconds, bytes and sessions are not (yet), so those line items are
reconciled against the provider-reported cost and say so.

Cost line items (OpenAI `/organization/costs` `line_item`, Anthropic cost report rows) are
placed on an endpoint, a model and a cost component by `classify_openai_line_items` and
`classify_anthropic_costs`; a line item no rule places keeps a null endpoint and is reported as
such, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

OPENAI = "openai"
ANTHROPIC = "anthropic"


@dataclass(frozen=True)
class UsageEndpoint:
    """One usage endpoint: where it lives, what it answers and the unit it bills."""

    provider: str
    name: str
    path: str
    result_object: str | None
    group_by: tuple[str, ...]
    unit: str
    # The result's documented quantity fields; the first one is the billed quantity.
    counters: tuple[str, ...]
    ledger_priced: bool
    # The warehouse column the billed quantity is stored in (token endpoints: the token columns).
    column: str | None = None


_OPENAI_GROUPS = ("model", "project_id", "api_key_id")


def _openai(
    name: str,
    unit: str,
    counters: tuple[str, ...],
    *,
    group_by: tuple[str, ...] = _OPENAI_GROUPS,
    column: str | None = None,
) -> UsageEndpoint:
    return UsageEndpoint(
        provider=OPENAI,
        name=name,
        path=f"/organization/usage/{name}",
        result_object=f"organization.usage.{name}.result",
        group_by=group_by,
        unit=unit,
        counters=counters,
        ledger_priced=unit == "tokens",
        column=column,
    )


OPENAI_USAGE_ENDPOINTS: tuple[UsageEndpoint, ...] = (
    _openai(
        "completions",
        "tokens",
        (
            "input_tokens",
            "output_tokens",
            "input_cached_tokens",
            "input_audio_tokens",
            "output_audio_tokens",
            "num_model_requests",
        ),
        group_by=("model", "project_id", "api_key_id", "batch"),
    ),
    _openai("embeddings", "tokens", ("input_tokens", "num_model_requests")),
    _openai("moderations", "tokens", ("input_tokens", "num_model_requests")),
    _openai(
        "images",
        "images",
        ("images", "num_model_requests"),
        group_by=(*_OPENAI_GROUPS, "size", "source"),
        column="images",
    ),
    _openai(
        "audio_speeches",
        "characters",
        ("characters", "num_model_requests"),
        column="characters",
    ),
    _openai(
        "audio_transcriptions",
        "seconds",
        ("seconds", "num_model_requests"),
        column="audio_seconds",
    ),
    _openai(
        "vector_stores",
        "bytes",
        ("usage_bytes",),
        group_by=("project_id",),
        column="usage_bytes",
    ),
    _openai(
        "code_interpreter_sessions",
        "sessions",
        # `num_sessions` in the current spec; `sessions` in older examples.
        ("num_sessions", "sessions"),
        group_by=("project_id",),
        column="sessions",
    ),
)

ANTHROPIC_MESSAGES = UsageEndpoint(
    provider=ANTHROPIC,
    name="messages",
    path="/organizations/usage_report/messages",
    result_object=None,
    group_by=("model", "workspace_id", "api_key_id", "service_tier", "context_window"),
    unit="tokens",
    counters=(
        "uncached_input_tokens",
        "cache_creation.ephemeral_5m_input_tokens",
        "cache_creation.ephemeral_1h_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
        "server_tool_use.web_search_requests",
    ),
    ledger_priced=True,
)

ENDPOINTS: dict[tuple[str, str], UsageEndpoint] = {
    (e.provider, e.name): e for e in (*OPENAI_USAGE_ENDPOINTS, ANTHROPIC_MESSAGES)
}
OPENAI_ENDPOINT_NAMES = tuple(e.name for e in OPENAI_USAGE_ENDPOINTS)
# Parts of counters the normalizer already reads (newer spec revisions break input down):
# known, so not reported as unrecognized units.
OPENAI_KNOWN_BREAKDOWNS = frozenset(
    {"input_uncached_tokens", "input_text_tokens", "input_cached_text_tokens", "output_text_tokens"}
)
# Fields every result may carry that are not quantities.
NON_COUNTERS = frozenset(
    {
        "object",
        "model",
        "project_id",
        "user_id",
        "api_key_id",
        "batch",
        "service_tier",
        "size",
        "source",
        "workspace_id",
        "context_window",
        "bucket_start_time",
        "bucket_starting_at",
        "usage_endpoint",
    }
)


def endpoint(provider: str, name: object) -> UsageEndpoint | None:
    """The registered endpoint, or None for a name the pipeline does not know."""
    if not isinstance(name, str):
        return None
    return ENDPOINTS.get((provider, name))


def endpoint_unit(provider: str, name: object) -> str | None:
    found = endpoint(provider, name)
    return None if found is None else found.unit


def _registered(provider: pd.Series, name: pd.Series, keys: set[tuple[str, str]]) -> pd.Series:
    pairs = pd.MultiIndex.from_arrays([provider.astype(object), name.astype(object)])
    return pd.Series(pairs.isin(list(keys)), index=name.index, dtype=bool)


def is_ledger_priced(provider: pd.Series, name: pd.Series) -> pd.Series:
    """Whether the ledger's engine prices each row's endpoint; a null endpoint is a row stored
    before endpoints existed (completions or messages), so it is priced."""
    priced = {(e.provider, e.name) for e in ENDPOINTS.values() if e.ledger_priced}
    return _registered(provider, name, priced) | name.isna().to_numpy()


def billed_in_other_units(provider: pd.Series, name: pd.Series) -> pd.Series:
    """Whether each row belongs to a known endpoint whose unit the ledger has no price for
    (images, characters, ...): such cost is reconciled per line item, not against tokens."""
    unpriced = {(e.provider, e.name) for e in ENDPOINTS.values() if not e.ledger_priced}
    return _registered(provider, name, unpriced)


def endpoint_from_object(objects: pd.Series) -> pd.Series:
    """`organization.usage.<name>.result` -> `<name>`; anything else -> null."""
    names = objects.astype("object").where(objects.notna(), None)
    extracted = names.astype(str).str.extract(r"^organization\.usage\.(.+)\.result$")[0]
    return extracted.astype("object").where(extracted.notna() & names.notna(), None)


# -- cost line items -------------------------------------------------------------------------

# Cost components the ledger prices separately, and the priced-usage column of each.
COMPONENT_COSTS = {
    "input": "cost_input_usd",
    "cached_input": "cost_cache_read_usd",
    "cache_write": "cost_cache_write_usd",
    "output": "cost_output_usd",
    "other": "cost_other_usd",
}
_KIND_COMPONENTS = {
    "input": "input",
    "uncached input": "input",
    "uncached_input_tokens": "input",
    "input_tokens": "input",
    "cached input": "cached_input",
    "cached_input": "cached_input",
    "cache read": "cached_input",
    "cache_read_input_tokens": "cached_input",
    "cache write": "cache_write",
    "cache_creation": "cache_write",
    "cache_creation.ephemeral_5m_input_tokens": "cache_write",
    "cache_creation.ephemeral_1h_input_tokens": "cache_write",
    "output": "output",
    "output_tokens": "output",
    "other": "other",
    "web_search": "other",
    "web search": "other",
}
# Whole-line-item keywords first (no model in them), then the model part's family.
_OPENAI_KEYWORDS = (
    (r"vector[ _-]?stor|file[ _-]?search[ _-]?stor", "vector_stores"),
    (r"code[ _-]?interpreter", "code_interpreter_sessions"),
)
_OPENAI_FAMILIES = (
    (r"embedding", "embeddings"),
    (r"moderation", "moderations"),
    (r"^(?:dall-e|gpt-image|chatgpt-image)", "images"),
    (r"tts", "audio_speeches"),
    (r"^whisper|transcribe", "audio_transcriptions"),
    (r"^(?:gpt-|o\d|chatgpt-|ft:|davinci|babbage|codex|computer-use)", "completions"),
)


def component_of(kinds: pd.Series) -> pd.Series:
    """The ledger's cost component of each line-item kind, or null when the kind is unknown
    (the line item is then compared with the model's whole cost)."""
    keys = kinds.astype("object").where(kinds.notna(), None)
    mapped = keys.map(lambda k: _KIND_COMPONENTS.get(k.strip().lower()) if k else None)
    return mapped.astype("object").where(mapped.notna(), None)


def classify_openai_line_items(line_items: pd.Series) -> pd.DataFrame:
    """`endpoint`, `model` and `cost_component` of OpenAI cost line items.

    Line items read `"<model>, <kind>"` (`"gpt-4o-mini, cached input"`) or name a tool or a
    storage (`"File search storage"`); the model part's family places it on an endpoint.
    """
    text = line_items.astype("object").where(line_items.notna(), None)
    parts = text.astype(str).str.split(", ", n=1)
    model = parts.str[0].where(text.notna(), None)
    kind = parts.str[1].where(text.notna() & (parts.str.len() > 1), None)
    lower = text.astype(str).str.lower()
    family = model.astype(str).str.lower()
    place = pd.Series(None, index=text.index, dtype="object")
    for pattern, name in _OPENAI_KEYWORDS:
        hit = place.isna() & text.notna() & lower.str.contains(pattern, regex=True)
        place = place.where(~hit, name)
    keyword = place.notna()
    for pattern, name in _OPENAI_FAMILIES:
        hit = place.isna() & text.notna() & family.str.contains(pattern, regex=True)
        place = place.where(~hit, name)
    return pd.DataFrame(
        {
            "endpoint": place.astype("object").where(place.notna(), None),
            # A tool or storage line item names no model; nor does one no rule places.
            "model": model.where(~keyword & place.notna(), None),
            "cost_component": component_of(kind.where(~keyword, None)),
        },
        index=text.index,
    )


def classify_anthropic_costs(
    cost_type: pd.Series, token_type: pd.Series, description: pd.Series, model: pd.Series
) -> pd.DataFrame:
    """`endpoint` and `cost_component` of Anthropic cost report rows: token and web-search costs
    are the messages endpoint's; any other cost type (`code_execution`, ...) is an endpoint the
    pipeline pulls no usage of, kept under its own name."""
    kind_from_text = description.astype("object").where(description.notna(), None)
    kind_from_text = kind_from_text.astype(str).str.split(", ", n=1).str[1]
    kind = token_type.astype("object").where(token_type.notna(), None)
    kind = kind.where(kind.notna(), cost_type.where(cost_type.eq("web_search"), None))
    kind = kind.where(kind.notna(), kind_from_text.where(description.notna(), None))
    ctype = cost_type.astype("object").where(cost_type.notna(), None)
    messages = ctype.isin(["tokens", "web_search"]) | (ctype.isna() & model.notna())
    place = ctype.where(~messages, ANTHROPIC_MESSAGES.name)
    return pd.DataFrame(
        {
            "endpoint": place.astype("object").where(place.notna(), None),
            "cost_component": component_of(kind).where(messages, None),
        },
        index=cost_type.index,
    )
