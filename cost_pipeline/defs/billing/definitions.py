"""The billing domain: overage, unit economics, the Stripe ledger and the monthly close."""

import dagster as dg

from cost_pipeline.defs.billing.assets import (
    billing_ledger,
    billing_period_close,
    billing_reconciliation,
    overage_charges,
    tenant_unit_economics,
)
from cost_pipeline.defs.billing.jobs import (
    billing_close_job,
    billing_close_schedule,
    billing_release_job,
    billing_run_job,
)
from cost_pipeline.defs.billing.sensors import billing_run_sensor

defs = dg.Definitions(
    assets=[
        overage_charges,
        tenant_unit_economics,
        billing_ledger,
        billing_reconciliation,
        billing_period_close,
    ],
    jobs=[billing_run_job, billing_close_job, billing_release_job],
    schedules=[billing_close_schedule],
    sensors=[billing_run_sensor],
)
