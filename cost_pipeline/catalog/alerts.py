"""The alert outbox: every message keyed by its fact, with its delivery state."""

from __future__ import annotations

from cost_pipeline.lib.schemas import TableSchema, col

ALERT_OUTBOX = TableSchema(
    name="alert_outbox",
    columns=(
        col("alert_key", "str", nullable=False),
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
    ),
    partition_column=None,
    unique=("alert_key",),
    indexes=(("status", "next_attempt_at"), ("tenant_id", "period", "kind")),
    doc="Every Slack alert, keyed by its fact; status pending/sending/sent/dry_run/failed.",
)
