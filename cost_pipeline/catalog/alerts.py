"""The alert outbox: one row per alert fact and channel, with its delivery state."""

from __future__ import annotations

from cost_pipeline.lib.schemas import TableSchema, col

ALERT_OUTBOX = TableSchema(
    name="alert_outbox",
    columns=(
        col(
            "alert_key",
            "str",
            nullable=False,
            doc="the row: its fact key for Slack, `<fact key>#email` / `#webhook` otherwise",
        ),
        col("tenant_id", "str", nullable=False),
        col("period", "str", nullable=False),
        col("kind", "str", nullable=False),
        col("ref", "str", nullable=False),
        col("day", "date"),
        col("channel", "str", nullable=False),
        col("text", "str", nullable=False),
        col("blocks", "json"),
        col("status", "str", nullable=False),
        col("attempts", "int", nullable=False, min_value=0),
        col("next_attempt_at", "datetime", nullable=False),
        col("last_error", "str"),
        col("claim_token", "str"),
        # Set by the first claim: the start of the Slack history searched before any re-send.
        col("first_attempt_at", "datetime"),
        col("created_at", "datetime", nullable=False),
        col("updated_at", "datetime", nullable=False),
        col("sent_at", "datetime"),
        col("slack_ts", "str"),
        # Added with email and webhooks; null on older rows, which are Slack rows of their fact.
        col("fact_key", "str", doc="tenant:period:kind:ref, the same for every channel"),
        col("transport", "str", doc="slack | email | webhook (null: slack)"),
        col("receipt", "str", doc="Slack ts, email Message-ID or webhook event id"),
        # Added with the digests; null on every other row.
        col(
            "attachments",
            "json",
            doc="files the message carries (a digest's chart): a JSON list of {filename, "
            "mime_type, title, data (base64)}",
        ),
    ),
    partition_column=None,
    unique=("alert_key",),
    indexes=(("status", "next_attempt_at"), ("tenant_id", "period", "kind")),
    doc=(
        "Every alert per channel (Slack, email, webhook), keyed by its fact and channel; status "
        "pending/sending/sent/dry_run/failed/superseded."
    ),
)
