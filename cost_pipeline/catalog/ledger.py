"""The ledger's core tables: the interaction log, quarantine, ingested files, the rate card, priced
interactions, provider usage and reported costs, reconciliation and the daily summary."""

from __future__ import annotations

from cost_pipeline.lib.schemas import TOKEN_COLUMNS, TableSchema, col, money, tokens

INTERACTION_KEYS = (
    col("event_id", "str", nullable=False),
    col("occurred_at", "datetime", nullable=False),
    col("day", "date", nullable=False),
    col("tenant_id", "str", nullable=False),
    col("user_id", "str"),
    col("agent_id", "str"),
    col("workflow_id", "str"),
    col("parent_event_id", "str"),
    col("provider", "str", nullable=False),
    col("model", "str", nullable=False),
    col("service_tier", "str"),
    col("batch", "bool"),
)

# Usage beyond tokens, as the app logged it: null when the record does not say (not zero), so a
# call stored before these columns existed and its re-delivery compare equal.
CALL_UNITS = (
    col("characters", "int", min_value=0, doc="Characters of input (text-to-speech)."),
    col("audio_seconds", "float", min_value=0, doc="Seconds of audio (transcription, speech)."),
    col("images", "int", min_value=0, doc="Images generated, edited or varied."),
    col("image_size", "str", doc="The images' size as priced (1024x1024, 1792x1024, ...)."),
    col("image_quality", "str", doc="The images' quality as priced (standard, hd, low, ...)."),
    col("video_seconds", "float", min_value=0, doc="Seconds of video generated."),
    col("requests", "int", min_value=0, doc="Billable requests of the call (null: one)."),
    money(
        "reported_cost_usd",
        nullable=True,
        doc="The cost the app logged for a service priced elsewhere (`cost_usd` in the log): "
        "kept as the call's cost, pricing_status app_reported.",
    ),
)

CALL_DETAILS = (
    col("latency_ms", "int", min_value=0, doc="Wall time of the call in milliseconds."),
    col("status", "str", doc="The call's outcome as the app logged it (ok, error, ...)."),
    col("source_file", "str", doc="The landing file the call was read from."),
)

LLM_INTERACTIONS = TableSchema(
    name="llm_interactions",
    columns=(
        *INTERACTION_KEYS,
        *(tokens(t) for t in TOKEN_COLUMNS),
        *CALL_UNITS,
        *CALL_DETAILS,
    ),
    view_of="priced_interactions",
    doc="One row per LLM call from the app's interaction log (the raw columns of "
    "priced_interactions, where each call is stored once).",
)

QUARANTINE = TableSchema(
    name="quarantine",
    columns=(
        col("source", "str", nullable=False),
        col("day", "date"),
        col("source_file", "str"),
        col("line", "int", min_value=0),
        col("raw", "str", nullable=False),
        col("reason", "str", nullable=False),
        col("detected_at", "datetime", nullable=False),
    ),
    partition_column=None,
    indexes=(("source",),),
    doc="Every rejected input record with its file, line (or row) number, raw text (bounded) "
    "and the reason; a file that cannot be opened at all is one row with no line.",
)

INGESTED_FILES = TableSchema(
    name="ingested_files",
    columns=(
        col("source", "str", nullable=False),
        col("path", "str", nullable=False),
        col("sha256", "str", nullable=False),
        col("size_bytes", "int", nullable=False, min_value=0),
        col("rows_loaded", "int", nullable=False, min_value=0),
        col("rows_duplicate", "int", nullable=False, min_value=0),
        col("rows_quarantined", "int", nullable=False, min_value=0),
        col("ingested_at", "datetime", nullable=False),
    ),
    partition_column=None,
    unique=("source", "path", "sha256"),
    doc="Files ingested by the incremental file ingesters, by path and content: the interaction "
    "log never reads the same content twice; a FOCUS delivery that re-delivers older content "
    "under a new folder is a new delivery.",
)

MODEL_PRICES = TableSchema(
    name="model_prices",
    columns=(
        col("provider", "str", nullable=False),
        col("model_pattern", "str", nullable=False),
        col("effective_from", "datetime"),
        col("effective_to", "datetime"),
        col("service_tier", "str"),
        col("batch", "bool"),
        col("input_mtok", "float", min_value=0),
        col("cache_read_mtok", "float", min_value=0),
        col("cache_write_mtok", "float", min_value=0),
        col("cache_write_1h_mtok", "float", min_value=0),
        col("output_mtok", "float", min_value=0),
        col("web_search_ktok", "float", min_value=0),
        col("long_context_threshold", "int", min_value=0),
        col("long_input_mtok", "float", min_value=0),
        col("long_cache_read_mtok", "float", min_value=0),
        col("long_cache_write_mtok", "float", min_value=0),
        col("long_cache_write_1h_mtok", "float", min_value=0),
        col("long_output_mtok", "float", min_value=0),
        col("source", "str", nullable=False),
        col("price_version", "str", nullable=False),
        col("characters_mchar", "float", min_value=0, doc="USD per million characters."),
        col("audio_hour", "float", min_value=0, doc="USD per hour of audio."),
        col("video_second", "float", min_value=0, doc="USD per second of video."),
        col("request_kcount", "float", min_value=0, doc="USD per thousand requests."),
        col("image_size", "str", doc="The image size `image_usd` is for (null: any)."),
        col("image_quality", "str", doc="The image quality `image_usd` is for (null: any)."),
        col("image_usd", "float", min_value=0, doc="USD per image of that size and quality."),
    ),
    partition_column=None,
    doc="Effective-dated rate card: genai-prices snapshot plus negotiated overrides and the "
    "configured rate cards of units beyond tokens (source genai-prices x.y.z, override or "
    "rate_card).",
)

# What the pricing engine adds to a call or a usage bucket.
PRICE_COLUMNS = (
    money("cost_input_usd"),
    money("cost_cache_read_usd"),
    money("cost_cache_write_usd"),
    money("cost_output_usd"),
    money("cost_other_usd"),
    money("cost_usd"),
    col("price_version", "str", doc="The rate card the row was priced with."),
    col(
        "pricing_status",
        "str",
        nullable=False,
        doc=(
            "How the row was priced: priced, override, tier_fallback, rate_card or "
            "app_reported (a cost), or unknown_model, incomplete_usage or invalid_usage (no "
            "cost: flagged, held from billing). See `lib.pricing`."
        ),
    ),
)

PRICED_INTERACTIONS = TableSchema(
    name="priced_interactions",
    columns=(
        *INTERACTION_KEYS,
        *(tokens(t) for t in TOKEN_COLUMNS),
        *CALL_UNITS,
        *PRICE_COLUMNS,
        money(
            "cost_units_usd",
            nullable=True,
            doc="USD for units beyond tokens (characters, audio and video seconds, images); "
            "part of cost_usd. Null on calls priced before units existed.",
        ),
        *CALL_DETAILS,
    ),
    unique=("day", "event_id"),
    day_partitioned=True,
    doc="Every logged LLM call, stored once, priced with the effective rate card at ingestion "
    "and re-priced per day when the rate card changes; unknown models flagged, never $0.",
)

PROVIDER_USAGE_COLUMNS = (
    col("day", "date", nullable=False),
    col("provider", "str", nullable=False),
    col("project_or_workspace_id", "str"),
    col("api_key_id", "str"),
    col("model", "str"),
    col("service_tier", "str"),
    col("context_window", "str"),
    col("batch", "bool"),
    *(tokens(t) for t in TOKEN_COLUMNS),
    tokens("requests"),
    col("tenant_id", "str"),
    col(
        "endpoint",
        "str",
        doc="The usage endpoint the bucket came from (OpenAI completions, embeddings, images, "
        "audio_speeches, audio_transcriptions, moderations, vector_stores, "
        "code_interpreter_sessions; Anthropic messages; or an endpoint the pipeline does not "
        "know, kept under its result's name). Null on rows stored before endpoints existed.",
    ),
    col("image_size", "str", doc="Images endpoint: the image size grouped by (1024x1024, ...)."),
    col(
        "image_source",
        "str",
        doc="Images endpoint: image.generation, image.edit or image.variation.",
    ),
    col(
        "input_audio_tokens",
        "int",
        min_value=0,
        doc="Completions: audio input tokens (not part of input_tokens; no ledger price).",
    ),
    col("output_audio_tokens", "int", min_value=0, doc="Completions: audio output tokens."),
    col("images", "int", min_value=0, doc="Images endpoint: images generated, edited or varied."),
    col("characters", "int", min_value=0, doc="Audio speeches endpoint: characters spoken."),
    col("audio_seconds", "float", min_value=0, doc="Audio transcriptions: seconds transcribed."),
    col("usage_bytes", "int", min_value=0, doc="Vector stores endpoint: bytes stored."),
    col("sessions", "int", min_value=0, doc="Code interpreter sessions endpoint: sessions."),
    col(
        "unrecognized",
        "str",
        doc="Non-zero quantities the normalizer does not know (`field=value; ...`), or the "
        "result object of an unknown endpoint: reported by the line-item reconciliation.",
    ),
)

OPENAI_USAGE = TableSchema(
    name="openai_usage",
    columns=PROVIDER_USAGE_COLUMNS,
    doc="OpenAI usage buckets normalized to the token convention.",
)
ANTHROPIC_USAGE = TableSchema(
    name="anthropic_usage",
    columns=PROVIDER_USAGE_COLUMNS,
    doc="Anthropic usage buckets normalized to the token convention.",
)

PROVIDER_USAGE_PRICED = TableSchema(
    name="provider_usage_priced",
    columns=(
        *PROVIDER_USAGE_COLUMNS,
        *PRICE_COLUMNS,
    ),
    doc="Provider usage buckets priced with the same engine as interactions.",
)

PROVIDER_REPORTED_COSTS = TableSchema(
    name="provider_reported_costs",
    columns=(
        col("day", "date", nullable=False),
        col("provider", "str", nullable=False),
        col("project_or_workspace_id", "str"),
        col("line_item", "str"),
        col("model", "str"),
        money("amount_usd", signed=True, doc="The amount the provider reports, in USD."),
        col("tenant_id", "str"),
        col(
            "endpoint",
            "str",
            doc="The usage endpoint the line item bills (see provider usage `endpoint`); null "
            "when no rule places the line item.",
        ),
        col(
            "cost_component",
            "str",
            doc="The ledger's cost component the line item matches (input, cached_input, "
            "cache_write, output, other); null when the line item names none.",
        ),
    ),
    doc="What the providers' cost endpoints report, in USD, per line item.",
)

LLM_COST_RECONCILIATION = TableSchema(
    name="llm_cost_reconciliation",
    columns=(
        col("day", "date", nullable=False),
        col("provider", "str", nullable=False),
        col("model", "str"),
        money("app_log_cost_usd"),
        money("provider_usage_cost_usd"),
        money("provider_reported_cost_usd", nullable=True, signed=True),
        col("coverage_pct", "float"),
        col("drift_pct", "float"),
        col("reported_drift_pct", "float"),
        col("tenant_id", "str"),
    ),
    doc="Per day and provider: app-log vs provider-usage vs provider-reported cost.",
)


DAILY_COST_SUMMARY = TableSchema(
    name="daily_cost_summary",
    columns=(
        col("day", "date", nullable=False),
        col("tenant_id", "str", nullable=False),
        col("cost_category", "str", nullable=False),
        col("provider", "str"),
        col("model_or_service", "str"),
        col("agent_id", "str"),
        tokens("requests"),
        tokens("input_tokens"),
        tokens("output_tokens"),
        money("cost_usd", signed=True),
        tokens("unpriced_requests"),
        *(
            col(f"{status}_requests", "int", min_value=0, doc=doc)
            for status, doc in (
                ("tier_fallback", "LLM calls priced at a fallback for a tier the catalog lacks."),
                ("override", "LLM calls priced by a configured price override or discount."),
                ("rate_card", "Calls with a unit priced by a configured rate card."),
                ("app_reported", "Calls whose cost is the one the app logged (kept as reported)."),
                ("unknown_model", "LLM calls of a model without a price (no cost)."),
                ("incomplete_usage", "LLM calls whose price needs usage the record lacks."),
                ("invalid_usage", "LLM calls whose cache tokens exceed their input (no cost)."),
            )
        ),
    ),
    indexes=(("day",), ("tenant_id", "day")),
    doc="Per day, tenant, category, provider, model or service and agent: requests, tokens, cost.",
)

INTERACTION_REVISIONS = TableSchema(
    name="interaction_revisions",
    columns=(
        col("event_id", "str", nullable=False),
        col("day", "date", nullable=False),
        col("revised_at", "datetime", nullable=False, doc="When the later version was ingested."),
        col(
            "old_content",
            "json",
            nullable=False,
            doc="The replaced version's raw columns (llm_interactions but source_file), as JSON.",
        ),
        col("new_content", "json", nullable=False, doc="The replacing version's raw columns."),
        money("old_cost_usd", nullable=True, doc="Total USD of the replaced version."),
        money("new_cost_usd", nullable=True, doc="Total USD of the replacing version."),
        col("old_source_file", "str", doc="The landing file the replaced version came from."),
        col("new_source_file", "str", doc="The landing file the replacing version came from."),
    ),
    indexes=(("day", "event_id"),),
    doc="Restatements of the interaction log: an event_id re-sent on the same day with other "
    "content in a later file replaces the stored call; the replaced version is kept here with "
    "both contents and costs (one row per replacement, oldest first by revised_at).",
)
