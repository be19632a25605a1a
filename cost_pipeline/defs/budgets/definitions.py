"""The budgets domain: budget status per tenant and period, per node of the budget hierarchy,
and the enforcement flag."""

import dagster as dg

from cost_pipeline.defs.budgets.assets import budget_status, budget_status_today, tenant_enforcement
from cost_pipeline.defs.budgets.hierarchy import budget_node_status, children_sum_to_parents

defs = dg.Definitions(
    assets=[budget_status, budget_node_status, tenant_enforcement, budget_status_today],
    asset_checks=[children_sum_to_parents],
)
