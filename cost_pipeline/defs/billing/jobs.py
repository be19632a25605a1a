"""Billing jobs: the billing run (sensor-requested) and the monthly close with its schedule."""

from __future__ import annotations

import dagster as dg

from cost_pipeline.defs.billing.assets import (
    billing_ledger,
    billing_period_close,
    billing_reconciliation,
)
from cost_pipeline.defs.partitions import monthly_partitions

# Providers restate D-1..D-3; tenant-local months end up to 14 h after UTC midnight. Closing on
# the 4th at 06:00 UTC leaves the restatement window behind for every tenant.
CLOSE_DAY_OF_MONTH = 4
CLOSE_HOUR_UTC = 6

billing_run_job = dg.define_asset_job(
    "billing_run_job",
    selection=dg.AssetSelection.assets(billing_ledger),
    description="Report new overage to Stripe (or record the dry run) through the ledger.",
)

billing_close_job = dg.define_asset_job(
    "billing_close_job",
    selection=dg.AssetSelection.assets(billing_reconciliation, billing_period_close),
    partitions_def=monthly_partitions,
    description=(
        "Finalize a month: reconcile the ledger with computed overage; a mismatch fails the "
        "blocking check, alerts and stops the close."
    ),
)

billing_close_schedule = dg.build_schedule_from_partitioned_job(
    billing_close_job,
    name="billing_close_schedule",
    day_of_month=CLOSE_DAY_OF_MONTH,
    hour_of_day=CLOSE_HOUR_UTC,
)
