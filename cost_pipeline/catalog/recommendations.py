"""Cost recommendations: savings found by re-pricing the last days of actual calls.

What each row means, how its figures and status are computed, is told in `lib.repricing` and
`lib.recommendations`.
"""

from __future__ import annotations

from cost_pipeline.lib.schemas import TableSchema, col, money, tokens

COST_RECOMMENDATIONS = TableSchema(
    name="cost_recommendations",
    columns=(
        col("day", "date", nullable=False, doc="The UTC day the window ends on."),
        col("tenant_id", "str", nullable=False),
        col("agent_id", "str", doc="The agent (null: calls logged without one)."),
        col("provider", "str", nullable=False),
        col("model", "str", nullable=False, doc="The model the calls ran on."),
        col(
            "kind",
            "str",
            nullable=False,
            doc="model_substitution | prompt_caching | batch_or_flex | long_context.",
        ),
        col(
            "option",
            "str",
            nullable=False,
            doc="What is recommended: the cheaper model, `batch` / `flex`, the cache hit rate "
            "assumed, or the input size to stay under.",
        ),
        col(
            "status",
            "str",
            nullable=False,
            doc="new | open | applied (usage moved to the option) | gone (no longer "
            "recommended); applied and gone rows appear on the day of the change only.",
        ),
        col("since_day", "date", nullable=False, doc="The day the recommendation was new."),
        money(
            "current_monthly_usd",
            doc="USD a month of the calls the option applies to, priced as they ran by the "
            "pricing engine (what the ledger charged, unless prices changed since).",
        ),
        money(
            "projected_monthly_usd",
            doc="USD a month of the same calls re-priced under the option by the same engine.",
        ),
        money(
            "saving_monthly_usd",
            signed=True,
            doc="current_monthly_usd - projected_monthly_usd.",
        ),
        col("saving_pct", "float", doc="The saving in percent of the current cost."),
        col("confidence", "str", nullable=False, doc="low | medium | high (lib.recommendations)."),
        col("assumptions", "str", nullable=False, doc="What the projection assumes, in words."),
        tokens("evidence_calls", doc="Priced calls of the window the figures are computed from."),
        tokens("evidence_days", doc="Days of the window with such calls."),
        tokens(
            "unpriced_calls",
            doc="Calls the option would apply to that the ledger could not price: left out of "
            "both figures, never counted as $0.",
        ),
        tokens(
            "unfit_calls",
            doc="Calls left out because the option cannot take them: over the cheaper model's "
            "context window, or without a price under the option.",
        ),
        col("window_start", "date", nullable=False, doc="The first day the figures cover."),
        col(
            "covered_days",
            "int",
            nullable=False,
            min_value=1,
            doc="Days from window_start through day: monthly = window USD / covered_days x "
            "30.4375.",
        ),
    ),
    indexes=(("day",), ("tenant_id", "day")),
    doc="Per UTC day: ways to spend less found by re-pricing the last window_days of each "
    "tenant's actual calls under a cheaper model, prompt caching, batch or flex processing, or "
    "staying under a long-context price tier, with the monthly saving, confidence, assumptions "
    "and evidence, and a status tracked from the previous day's rows.",
)
