"""Billing assets: overage per tenant and period, the Stripe ledger, unit economics, month close.

Data flows through the warehouse: `overage_charges` (daily partitions, each recomputing the
whole tenant-local periods its UTC day touches) -> `billing_ledger` (one billing run: brings
Stripe to the computed amounts, exactly once) -> `billing_reconciliation` + its blocking check
-> `billing_period_close` (monthly partitions, run by the close job after the restatement
window). `tenant_unit_economics` sits beside `overage_charges`.
"""

# No `from __future__ import annotations` here: Dagster 1.13 checks the `context` annotation at
# definition time and rejects the string form it would become.
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import BILLING_RECONCILIATION, OVERAGE_CHARGES, TENANT_UNIT_ECONOMICS
from cost_pipeline.defs.billing.run import report_overage
from cost_pipeline.defs.partitions import (
    SINGLE_RUN,
    daily_partitions,
    monthly_partitions,
    partition_days,
)
from cost_pipeline.lib.billing_ledger import reconcile_period
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.overage import unit_economics
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.resources.stripe_billing import StripeBillingResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.billing import close_period, read_ledger
from cost_pipeline.store.spend import overage_for_days
from cost_pipeline.store.warehouse import Warehouse

# Upstream assets by key: their modules belong to other domains and import heavier code.
priced_interactions = dg.AssetKey("priced_interactions")
daily_cost_summary = dg.AssetKey("daily_cost_summary")

CLOSE_CHECK = "billing_ledger_matches_overage"
HOLD_COLUMNS = ["identifier", "tenant_id", "period", "value_cents", "hold_reason"]
MARGIN_COLUMNS = ["tenant_id", "tier", "revenue_usd", "cost_usd", "gross_margin_usd", "margin_pct"]
RECON_COLUMNS = [
    "tenant_id",
    "computed_cents",
    "reported_cents",
    "unconfirmed_cents",
    "pending_credit_cents",
    "difference_cents",
    "held_cents",
    "held_reason",
    "waiting_on",
]


def _replace_by_period(wh: Warehouse, schema: object, frame: pd.DataFrame) -> int:
    # One period at a time: a (period, tenant) cross product would delete rows of tenants whose
    # other period this day does not touch.
    written = 0
    for period, rows in frame.groupby("period"):
        written += wh.replace_where(
            schema, {"period": [period], "tenant_id": rows["tenant_id"].tolist()}, rows
        )  # type: ignore[arg-type]
    return written


def charges_fingerprint(charges: pd.DataFrame) -> str:
    """A digest of every (tenant, period, cents): what Stripe should reflect right now."""
    keyed = charges.sort_values(["tenant_id", "period"])
    text = "\n".join(
        f"{t}|{p}|{c}"
        for t, p, c in zip(keyed["tenant_id"], keyed["period"], keyed["amount_cents"], strict=True)
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dg.asset(
    group_name="billing",
    kinds={"python"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[priced_interactions, daily_cost_summary],
    description=(
        "Per tenant and tenant-local month: allowance (USD of cost or tokens), usage to date, "
        "overage and amount to bill (tier markup / unit price, or Enterprise contract rate). "
        "A day's run recomputes every period it touches in full."
    ),
)
def overage_charges(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    wh = warehouse.get()
    # Every period the run's days touch, each computed once, in full, as of now: a range of
    # days in one run gives what running its last day alone would.
    charges = overage_for_days(wh, cost_config.get(), days=partition_days(context))
    rows = _replace_by_period(wh, OVERAGE_CHARGES, charges)
    everything = wh.read(OVERAGE_CHARGES, columns=["tenant_id", "period", "amount_cents"])
    top = charges[charges["amount_cents"] > 0].nlargest(10, "amount_usd")
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "periods": ", ".join(sorted(set(charges["period"]))),
            "total_overage_usd": round(float(charges["amount_usd"].sum()), 2),
            "tenants_in_overage": int((charges["amount_cents"] > 0).sum()),
            "charges_fingerprint": charges_fingerprint(everything),
            "top_overage": dg.MetadataValue.md(
                markdown_table(top[["tenant_id", "period", "usage_usd", "amount_usd"]])
            ),
        }
    )


@dg.asset(
    group_name="billing",
    kinds={"python"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[overage_charges, daily_cost_summary],
    description=(
        "Per tenant and month: revenue (tier price + billed overage) against the tenant's whole "
        "cost, gross margin and margin % — which tenants lose money."
    ),
)
def tenant_unit_economics(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    wh = warehouse.get()
    config = cost_config.get()
    charges = overage_for_days(wh, config, days=partition_days(context))
    economics = unit_economics(charges, config)
    rows = _replace_by_period(wh, TENANT_UNIT_ECONOMICS, economics)
    losing = economics[economics["gross_margin_usd"] < 0]
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "revenue_usd": round(float(economics["revenue_usd"].sum()), 2),
            "cost_usd": round(float(economics["cost_usd"].sum()), 2),
            "gross_margin_usd": round(float(economics["gross_margin_usd"].sum()), 2),
            "tenants_losing_money": len(losing),
            "margins": dg.MetadataValue.md(
                markdown_table(
                    economics.sort_values("gross_margin_usd")[MARGIN_COLUMNS],
                    max_rows=30,
                )
            ),
        }
    )


def _enqueue_alerts(wh: Warehouse, config: CostConfig, alerts: pd.DataFrame, now: datetime) -> str:
    """Queue billing alerts for the finance channel through the alert outbox."""
    try:
        from cost_pipeline.lib.outbox import route_alerts
        from cost_pipeline.store import outbox
    except ImportError:  # pragma: no cover - the outbox ships with the alerts issue
        return "alert outbox not available"
    if alerts.empty:
        return "none"
    alerts = alerts.assign(day=None, blocks=None, channel=config.alerts.default_channel)
    try:
        result = outbox.enqueue(wh, route_alerts(alerts, config.channels), now=now)
    except Exception as exc:  # an alerting fault must not hide the billing result itself
        return f"alert outbox failed: {type(exc).__name__}: {exc}"
    return f"{len(result.inserted)} queued, {len(result.skipped)} already known"


@dg.asset(
    group_name="billing",
    kinds={"python", "stripe"},
    deps=[overage_charges],
    description=(
        "The billing run: every intended Stripe meter event, recorded before sending and its "
        "outcome after; pending credits when recomputed overage falls. Without STRIPE_API_KEY "
        "it is a dry run and the ledger shows what would be sent."
    ),
)
def billing_ledger(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
    stripe_billing: StripeBillingResource,
) -> dg.MaterializeResult:
    wh = warehouse.get()
    config = cost_config.get()
    now = datetime.now(UTC)
    charges = wh.read(OVERAGE_CHARGES)
    summary = report_overage(
        wh,
        charges,
        stripe_billing.sender(),
        now=now,
        confirm_after=stripe_billing.confirm_after,
        ceiling_cents=int(config.billing.max_overage_usd_per_period * 100),
    )
    ceiling = float(config.billing.max_overage_usd_per_period)
    alerts = pd.concat(
        [
            _ledger_alerts(
                summary.new_pending_credits,
                "billing_pending_credit",
                lambda r: (
                    f"Overage of {r['tenant_id']} for {r['period']} fell "
                    f"{r['value_cents'] / 100:.2f} USD below what Stripe was sent; pending "
                    f"credit {r['identifier']} needs a decision."
                ),
            ),
            _ledger_alerts(
                summary.new_holds,
                "billing_overage_held",
                lambda r: (
                    f"Overage of {r['tenant_id']} for {r['period']} HELD ({r['hold_reason']}): "
                    f"{r['value_cents'] / 100:,.2f} USD computed (ceiling {ceiling:,.2f} USD) "
                    "was not sent to Stripe. Check it, then run billing_release_job with "
                    f"tenant_id={r['tenant_id']}, period={r['period']} to send it."
                ),
            ),
        ],
        ignore_index=True,
    )
    alerted = _enqueue_alerts(wh, config, alerts, now)
    if not summary.open_holds.empty:
        context.log.warning(
            f"{len(summary.open_holds)} tenant-period(s) held from Stripe until released "
            "(billing_release_job): " + ", ".join(sorted(summary.open_holds["identifier"]))
        )
    if summary.failed or summary.unconfirmed:
        context.log.warning(
            f"{summary.failed} meter event(s) rejected and {summary.unconfirmed} unconfirmed; "
            "they stay in the ledger and are resent with the same identifier next run."
        )
    actions = pd.DataFrame(summary.actions)
    return dg.MaterializeResult(
        metadata={
            "mode": "dry_run" if stripe_billing.dry_run else "live",
            "sent": summary.sent,
            "confirmed": summary.confirmed,
            "dry_run": summary.dry_run,
            "failed": summary.failed,
            "unconfirmed": summary.unconfirmed,
            "cancelled": summary.cancelled,
            "new_pending_credits": len(summary.new_pending_credits),
            "new_holds": len(summary.new_holds),
            "held": len(summary.open_holds),
            "held_periods": dg.MetadataValue.md(
                markdown_table(
                    summary.open_holds[HOLD_COLUMNS]
                    if len(summary.open_holds)
                    else pd.DataFrame(columns=HOLD_COLUMNS)
                )
            ),
            "pending_credit_alerts": alerted,
            "meter_events": dg.MetadataValue.md(markdown_table(actions, max_rows=50)),
        }
    )


def _ledger_alerts(rows: pd.DataFrame, kind: str, text: Callable[[dict], str]) -> pd.DataFrame:
    """One finance alert per new ledger row (a pending credit, a hold), keyed by identifier."""
    records = rows.to_dict("records")
    return pd.DataFrame(
        {
            "tenant_id": [r["tenant_id"] for r in records],
            "period": [r["period"] for r in records],
            "kind": kind,
            "ref": [r["identifier"] for r in records],
            "text": [text(r) for r in records],
        },
        columns=["tenant_id", "period", "kind", "ref", "text"],
    )


def _waiting_on(recon: pd.DataFrame) -> list[str]:
    """Identifiers of meter events still unconfirmed: the close waits until a run settles them."""
    names = recon["waiting_on"].dropna() if "waiting_on" in recon else pd.Series(dtype=str)
    return sorted(i for joined in names for i in str(joined).split(", ") if i)


@dg.asset(
    group_name="billing",
    kinds={"python"},
    partitions_def=monthly_partitions,
    deps=[billing_ledger, overage_charges],
    check_specs=[
        dg.AssetCheckSpec(
            CLOSE_CHECK,
            asset="billing_reconciliation",
            partitions_def=monthly_partitions,
            blocking=True,
            description=(
                "The ledger's reported total equals the period's computed overage and no meter "
                "event is still unconfirmed (metadata `waiting_on` names those that are)."
            ),
        )
    ],
    description="Per tenant: the ledger's reported cents vs the period's computed overage.",
)
def billing_reconciliation(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
    stripe_billing: StripeBillingResource,
):
    wh = warehouse.get()
    now = datetime.now(UTC)
    period = context.partition_key[:7]
    mode = "dry_run" if stripe_billing.dry_run else "live"
    charges = wh.read(OVERAGE_CHARGES, where={"period": [period]})
    recon = reconcile_period(read_ledger(wh), charges, period, mode)
    recon = recon.assign(reconciled_at=now)
    wh.replace_where(BILLING_RECONCILIATION, {"period": [period]}, recon)
    bad = recon[~recon["ok"]]
    waiting = _waiting_on(recon)
    alerted = "none"
    if not bad.empty:
        alerts = pd.DataFrame(
            {
                "tenant_id": bad["tenant_id"],
                "period": period,
                "kind": "billing_close_mismatch",
                "ref": [
                    f"{d}:{u}"
                    for d, u in zip(bad["difference_cents"], bad["unconfirmed_cents"], strict=True)
                ],
                "text": [
                    f"Month close of {period} stopped: {t} reported {r / 100:.2f} USD vs "
                    f"computed {c / 100:.2f} USD ({u / 100:.2f} USD unconfirmed"
                    + (f", waiting on {w}" if isinstance(w, str) and w else "")
                    + (f", {h / 100:.2f} USD held: {why}" if isinstance(why, str) and why else "")
                    + ")."
                    for t, r, c, u, w, h, why in zip(
                        bad["tenant_id"],
                        bad["reported_cents"],
                        bad["computed_cents"],
                        bad["unconfirmed_cents"],
                        bad["waiting_on"],
                        bad["held_cents"],
                        bad["held_reason"],
                        strict=True,
                    )
                ],
            }
        )
        alerted = _enqueue_alerts(wh, cost_config.get(), alerts, now)
    table = dg.MetadataValue.md(markdown_table((bad if not bad.empty else recon)[RECON_COLUMNS]))
    yield dg.MaterializeResult(
        metadata={
            "period": period,
            "mode": mode,
            "tenants": len(recon),
            "computed_usd": round(int(recon["computed_cents"].sum()) / 100, 2),
            "reported_usd": round(int(recon["reported_cents"].sum()) / 100, 2),
            "mismatches": len(bad),
            "held": int(recon["held_reason"].notna().sum()),
            "held_usd": round(int(recon["held_cents"].sum()) / 100, 2),
            "waiting_on": dg.MetadataValue.json(waiting),
            "alerts": alerted,
        }
    )
    yield dg.AssetCheckResult(
        check_name=CLOSE_CHECK,
        passed=bad.empty,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "mismatches": len(bad),
            "waiting_on": dg.MetadataValue.json(waiting),
            "tenants": table,
        },
    )


@dg.asset(
    group_name="billing",
    kinds={"python"},
    partitions_def=monthly_partitions,
    deps=[billing_reconciliation],
    description="Finalizes a reconciled period: the billing run sends nothing more for it.",
)
def billing_period_close(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    wh = warehouse.get()
    period = context.partition_key[:7]
    recon = wh.read(BILLING_RECONCILIATION, where={"period": [period]})
    if not recon["ok"].all():
        waiting = _waiting_on(recon)
        detail = f"; waiting on {', '.join(waiting)}" if waiting else ""
        raise dg.Failure(f"billing period {period} does not reconcile; not closing it{detail}")
    rows = close_period(wh, recon, now=datetime.now(UTC))
    return dg.MaterializeResult(
        metadata={
            "period": period,
            "tenants_closed": rows,
            "billed_usd": round(int(recon["reported_cents"].sum()) / 100, 2),
        }
    )
