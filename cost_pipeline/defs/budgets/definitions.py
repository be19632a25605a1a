"""The budgets domain: budget status per tenant and period, and the enforcement flag."""

import dagster as dg

from cost_pipeline.defs.budgets.assets import budget_status, budget_status_today, tenant_enforcement

defs = dg.Definitions(assets=[budget_status, tenant_enforcement, budget_status_today])
