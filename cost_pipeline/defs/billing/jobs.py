"""Billing jobs: the billing run (sensor-requested), the release of a held tenant-period, and
the monthly close with its schedule."""

# No `from __future__ import annotations`: Dagster resolves the op's config annotation at
# definition time.

import dagster as dg

from cost_pipeline.defs.billing.assets import (
    billing_ledger,
    billing_period_close,
    billing_reconciliation,
)
from cost_pipeline.defs.billing.run import release_held_period
from cost_pipeline.defs.partitions import monthly_partitions
from cost_pipeline.resources.warehouse import WarehouseResource

# Providers restate D-1..D-3; tenant-local months end up to 14 h after UTC midnight. Closing on
# the 4th at 06:00 UTC leaves the restatement window behind for every tenant.
CLOSE_DAY_OF_MONTH = 4
CLOSE_HOUR_UTC = 6

billing_run_job = dg.define_asset_job(
    "billing_run_job",
    selection=dg.AssetSelection.assets(billing_ledger),
    description="Report new overage to Stripe (or record the dry run) through the ledger.",
)


class BillingReleaseConfig(dg.Config):
    """Which held tenant-period to release, who decided and why (kept on the ledger row)."""

    tenant_id: str
    period: str  # YYYY-MM, the tenant's local month
    released_by: str
    reason: str


@dg.op(description="Mark a held tenant-period released; the next billing run sends it.")
def release_held_overage(
    context: dg.OpExecutionContext, config: BillingReleaseConfig, warehouse: WarehouseResource
) -> None:
    try:
        released = release_held_period(
            warehouse.get(),
            config.tenant_id,
            config.period,
            released_by=config.released_by,
            reason=config.reason,
        )
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    for row in released.itertuples():
        context.log.info(
            f"released {row.identifier} ({row.hold_reason}): {row.value_cents / 100:,.2f} USD "
            f"by {row.released_by}: {row.release_reason}"
        )


@dg.job(
    description=(
        "Release a held tenant-period (run config: tenant_id, period, released_by, reason) so "
        "the next billing run sends its overage to Stripe."
    ),
)
def billing_release_job() -> None:
    release_held_overage()


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
