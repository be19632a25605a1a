"""The table catalogue: every warehouse table, declared once, importable on its own.

Each `TableSchema` names its columns, kinds, bounds and documentation. The store creates and
migrates tables from it (`cost_pipeline.store`), `TableSchema.conform` validates frames against
it, and the Dagster assets publish it as their column schema. Nothing registers tables as a side
effect of an import: this package is the whole list.
"""

from __future__ import annotations

from cost_pipeline.catalog.alerts import ALERT_OUTBOX
from cost_pipeline.catalog.analytics import ANOMALY_SCORES, COST_FORECASTS
from cost_pipeline.catalog.billing import (
    BILLING_LEDGER,
    BILLING_PERIOD_CLOSE,
    BILLING_RECONCILIATION,
    OVERAGE_CHARGES,
    TENANT_UNIT_ECONOMICS,
)
from cost_pipeline.catalog.budget_tree import BUDGET_NODE_STATUS
from cost_pipeline.catalog.budgets import BUDGET_STATUS, TENANT_ENFORCEMENT
from cost_pipeline.catalog.enforcement import (
    CONFIG_SNAPSHOTS,
    COUNTER_REFRESHES,
    ENFORCEMENT_ACTIONS,
    ENFORCEMENT_AUDIT,
    SPEND_COUNTERS,
)
from cost_pipeline.catalog.fx import FX_RATES
from cost_pipeline.catalog.infrastructure import (
    CLOUD_COST_DELIVERIES,
    CLOUD_COSTS,
    INFRA_COST_ALLOCATION,
    K8S_ALLOCATIONS,
)
from cost_pipeline.catalog.ledger import (
    ANTHROPIC_USAGE,
    DAILY_COST_SUMMARY,
    INGESTED_FILES,
    INTERACTION_REVISIONS,
    LLM_COST_RECONCILIATION,
    LLM_INTERACTIONS,
    MODEL_PRICES,
    OPENAI_USAGE,
    PRICED_INTERACTIONS,
    PROVIDER_REPORTED_COSTS,
    PROVIDER_USAGE_PRICED,
    QUARANTINE,
)
from cost_pipeline.catalog.line_items import LLM_LINE_ITEM_RECONCILIATION
from cost_pipeline.catalog.maintenance import RETENTION_LOG
from cost_pipeline.catalog.recommendations import COST_RECOMMENDATIONS
from cost_pipeline.catalog.rollups import (
    AGENT_COSTS,
    AGENT_UNIT_ECONOMICS,
    END_USER_COSTS,
    WORKFLOW_RUNS,
)
from cost_pipeline.lib.schemas import TableSchema

TABLES: dict[str, TableSchema] = {
    t.name: t
    for t in (
        LLM_INTERACTIONS,
        QUARANTINE,
        INGESTED_FILES,
        MODEL_PRICES,
        PRICED_INTERACTIONS,
        INTERACTION_REVISIONS,
        OPENAI_USAGE,
        ANTHROPIC_USAGE,
        PROVIDER_USAGE_PRICED,
        PROVIDER_REPORTED_COSTS,
        LLM_COST_RECONCILIATION,
        LLM_LINE_ITEM_RECONCILIATION,
        CLOUD_COSTS,
        CLOUD_COST_DELIVERIES,
        FX_RATES,
        K8S_ALLOCATIONS,
        INFRA_COST_ALLOCATION,
        DAILY_COST_SUMMARY,
        WORKFLOW_RUNS,
        END_USER_COSTS,
        AGENT_COSTS,
        COST_FORECASTS,
        ANOMALY_SCORES,
        BUDGET_STATUS,
        BUDGET_NODE_STATUS,
        TENANT_ENFORCEMENT,
        SPEND_COUNTERS,
        COUNTER_REFRESHES,
        ENFORCEMENT_ACTIONS,
        ENFORCEMENT_AUDIT,
        CONFIG_SNAPSHOTS,
        OVERAGE_CHARGES,
        TENANT_UNIT_ECONOMICS,
        AGENT_UNIT_ECONOMICS,
        COST_RECOMMENDATIONS,
        BILLING_LEDGER,
        BILLING_PERIOD_CLOSE,
        BILLING_RECONCILIATION,
        ALERT_OUTBOX,
        RETENTION_LOG,
    )
}
