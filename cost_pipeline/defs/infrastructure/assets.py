"""Cloud (FOCUS) and Kubernetes costs, allocated to tenants, and the FOCUS export of the ledger."""

# No `from __future__ import annotations`: Dagster reads the `context` annotations at
# definition time and rejects them as strings.

import hashlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import (
    CLOUD_COST_DELIVERIES,
    CLOUD_COSTS,
    DAILY_COST_SUMMARY,
    INFRA_COST_ALLOCATION,
    INGESTED_FILES,
    K8S_ALLOCATIONS,
    QUARANTINE,
)
from cost_pipeline.defs.partitions import (
    SINGLE_RUN,
    daily_partitions,
    for_each_day,
    monthly_partitions,
    partition_day,
)
from cost_pipeline.lib.allocation import (
    allocate,
    cloud_ledger,
    conservation,
    k8s_ledger,
    map_k8s_tenants,
)
from cost_pipeline.lib.focus import SOURCE, delivery_is_new, load_focus_file, supersedes
from cost_pipeline.lib.focus_export import (
    export_problems,
    ledger_to_focus,
    month_days,
    read_focus_export,
    validate_focus,
    write_focus_month,
)
from cost_pipeline.lib.fx import fx_summary, to_usd
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.resources.focus_exports import FocusExports
from cost_pipeline.resources.http import ApiError
from cost_pipeline.resources.kubecost import KubernetesAllocations
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store import queries
from cost_pipeline.store.fx import fx_rates
from cost_pipeline.store.warehouse import Warehouse

CHANGED_DAYS = "changed_days"
K8S_SOURCE = "k8s_allocations"


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dg.asset(
    group_name="infrastructure",
    kinds={"python", "sql"},
    check_specs=[
        dg.AssetCheckSpec(
            "focus_deliveries_complete",
            asset="cloud_costs",
            description=(
                "Every new FOCUS delivery could be read whole. A delivery with a file that "
                "cannot be read is not loaded (its billing period keeps the previous delivery) "
                "and the cloud source is named missing here (WARN)."
            ),
        ),
        dg.AssetCheckSpec(
            "focus_data_fresh",
            asset="cloud_costs",
            description=(
                "Every provider's newest FOCUS row is at most allocation.focus_stale_after_days "
                "old (WARN otherwise): an export that stopped leaves its tenants' cloud spend "
                "out of summaries, forecasts and budgets, and holds a fall in it at `low`."
            ),
        ),
    ],
    description=(
        "FinOps FOCUS rows from FOCUS_EXPORT_DIR, normalized and mapped to tenants. A newer "
        "delivery of a provider's billing period replaces the older one, never adds to it; "
        "rows that break the spec go to `quarantine`."
    ),
)
def cloud_costs(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
    focus_exports: FocusExports,
) -> dg.MaterializeResult:
    wh = warehouse.get()
    if not focus_exports.is_configured:
        return dg.MaterializeResult(
            metadata={"source": "not configured", CHANGED_DAYS: []},
            check_results=[
                dg.AssetCheckResult(check_name=name, passed=True, description="not configured")
                for name in ("focus_deliveries_complete", "focus_data_fresh")
            ],
        )
    config = cost_config.get()
    ingested_files = wh.read(INGESTED_FILES, where={"source": [SOURCE]}, columns=["path", "sha256"])
    ingested = set(zip(ingested_files["path"], ingested_files["sha256"], strict=True))
    loaded = wh.read(CLOUD_COST_DELIVERIES)
    current = {
        (r.provider, r.billing_period_start): (r.delivered_at, r.delivery)
        for r in loaded.itertuples()
    }
    changed: set[str] = set()
    totals = {"deliveries": 0, "stale_scopes": 0, "rows": 0, "quarantined": 0, "replaced": 0}
    incomplete: list[str] = []
    for delivery in focus_exports.deliveries():
        digests = {f: _digest(f) for f in delivery.files}
        if not delivery_is_new({str(f): d for f, d in digests.items()}, ingested):
            continue
        now = datetime.now(UTC)
        batches = [load_focus_file(f, config=config, detected_at=now) for f in delivery.files]
        rows = pd.concat([b.rows for b in batches], ignore_index=True)
        quarantine = pd.concat([b.quarantine for b in batches], ignore_index=True)
        unreadable = [f for b in batches for f in b.unreadable_files]
        if unreadable:
            # A delivery with a file that cannot be read is incomplete: loading the rest would
            # replace a whole billing period with part of it. Its files are quarantined.
            incomplete.append(delivery.name)
            context.log.error(f"{delivery.name}: unreadable file(s) {unreadable}: not loaded")
            rows = rows.iloc[0:0]
        # One transaction per delivery: its scopes, quarantine and "seen" marks land together.
        with wh.transaction(lock_key=f"{SOURCE}:ingest") as conn:
            for (provider, period), scope in rows.groupby(["provider", "billing_period_start"]):
                loaded_at, loaded_name = current.get((provider, period), (None, None))
                if not supersedes(
                    delivery.delivered_at,
                    delivery.name,
                    None if loaded_at is None else pd.Timestamp(loaded_at).to_pydatetime(),
                    loaded_name,
                ):
                    totals["stale_scopes"] += 1
                    context.log.warning(
                        f"{delivery.name}: {provider} {period} is older than the loaded delivery"
                    )
                    continue
                replaced, old_days = wh.delete_where(
                    conn, CLOUD_COSTS, {"provider": provider, "billing_period_start": period}
                )
                changed.update(str(d) for d in old_days)
                totals["replaced"] += replaced
                wh.append(CLOUD_COSTS, scope, conn=conn)
                changed.update(str(d) for d in scope["day"].unique())
                wh.delete_where(
                    conn,
                    CLOUD_COST_DELIVERIES,
                    {"provider": provider, "billing_period_start": period},
                )
                record = {
                    "provider": provider,
                    "billing_period_start": period,
                    "delivery": delivery.name,
                    "delivered_at": delivery.delivered_at,
                    "rows_loaded": len(scope),
                    "ingested_at": now,
                }
                wh.append(CLOUD_COST_DELIVERIES, pd.DataFrame([record]), conn=conn)
                current[(provider, period)] = (delivery.delivered_at, delivery.name)
                totals["rows"] += len(scope)
            if len(quarantine):
                wh.append(QUARANTINE, quarantine, conn=conn)
            new_files = [
                {
                    "source": SOURCE,
                    "path": str(f),
                    "sha256": d,
                    "size_bytes": f.stat().st_size,
                    "rows_loaded": int((rows["source_file"] == str(f)).sum()),
                    "rows_duplicate": 0,
                    "rows_quarantined": int((quarantine["source_file"] == str(f)).sum()),
                    "ingested_at": now,
                }
                for f, d in digests.items()
                if (str(f), d) not in ingested
            ]
            wh.append(INGESTED_FILES, pd.DataFrame(new_files), conn=conn)
        ingested.update((str(f), d) for f, d in digests.items())
        totals["deliveries"] += 1
        totals["quarantined"] += len(quarantine)
        context.log.info(f"{delivery.name}: {len(rows):,} rows, {len(quarantine):,} quarantined")

    by_provider = queries.cloud_billing_periods(wh)
    return dg.MaterializeResult(
        metadata={
            "source": focus_exports.path or "demo",
            "deliveries_loaded": totals["deliveries"],
            "stale_scopes_skipped": totals["stale_scopes"],
            "rows_loaded": totals["rows"],
            "rows_replaced": totals["replaced"],
            "rows_quarantined": totals["quarantined"],
            "incomplete_deliveries": dg.MetadataValue.json(incomplete),
            CHANGED_DAYS: dg.MetadataValue.json(sorted(changed)),
            "billing_periods": dg.MetadataValue.md(markdown_table(by_provider)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="focus_deliveries_complete",
                passed=not incomplete,
                severity=dg.AssetCheckSeverity.WARN,
                description=(
                    f"not loaded, a file could not be read: {', '.join(incomplete)} "
                    "(see quarantine); their billing periods keep the previous delivery"
                    if incomplete
                    else f"{totals['deliveries']} new deliver(ies) read whole"
                ),
                metadata={"incomplete_deliveries": dg.MetadataValue.json(incomplete)},
            ),
            _freshness(wh, config.allocation.focus_stale_after_days),
        ],
    )


def _freshness(wh: Warehouse, stale_after_days: int) -> dg.AssetCheckResult:
    """`focus_data_fresh`: each provider's newest FOCUS day against today (UTC)."""
    today = datetime.now(UTC).date()
    newest = queries.newest_cloud_days(wh)
    lag = {p: (today - d).days for p, d in sorted(newest.items())}
    stale = {p: d for p, d in newest.items() if lag[p] > stale_after_days}
    if not newest:
        text = "no FOCUS rows loaded yet"
    elif stale:
        named = ", ".join(f"{p} ends on {d} ({lag[p]} days ago)" for p, d in sorted(stale.items()))
        text = (
            f"stale FOCUS data: {named}, more than {stale_after_days} days: its export may have "
            "stopped. Until its rows arrive, its tenants' cloud spend is missing from summaries, "
            "forecasts and budgets, and a fall in it is held at low as still arriving."
        )
    else:
        text = f"every provider's FOCUS rows reach within {stale_after_days} days of {today}"
    return dg.AssetCheckResult(
        check_name="focus_data_fresh",
        passed=not stale,
        severity=dg.AssetCheckSeverity.WARN,
        description=text,
        metadata={
            "newest_day": dg.MetadataValue.json({p: str(d) for p, d in sorted(newest.items())}),
            "days_behind": dg.MetadataValue.json(lag),
        },
    )


@dg.asset(
    group_name="infrastructure",
    kinds={"python", "sql"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    check_specs=[
        dg.AssetCheckSpec(
            "k8s_source_answered",
            asset="k8s_allocations",
            partitions_def=daily_partitions,
            description=(
                "Kubecost / OpenCost answered for the day with allocations. When it failed or "
                "answered empty for a recent day, the stored day was kept and the source is "
                "named missing here (WARN: the LLM side and the summary still build)."
            ),
        ),
        dg.AssetCheckSpec(
            "k8s_stored_equals_response",
            asset="k8s_allocations",
            partitions_def=daily_partitions,
            blocking=True,
            description=(
                "What was stored for the day plus what was quarantined equals the total of "
                "Kubecost / OpenCost's answer (read back from the warehouse, not from memory)."
            ),
        ),
    ],
    description=(
        "Kubecost / OpenCost allocations of the day by namespace and tenant label; idle (signed: "
        "over-committed clusters make it negative) and unmapped allocations kept as their own "
        "rows (tenant null). A failed or empty answer for a recent day keeps the stored day."
    ),
)
@for_each_day
def k8s_allocations(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
    kubecost: KubernetesAllocations,
):
    day = partition_day(context)
    wh = warehouse.get()
    if not kubecost.is_configured:
        wh.replace_partition(K8S_ALLOCATIONS, day, K8S_ALLOCATIONS.empty_frame())
        yield dg.MaterializeResult(metadata={"source": "not configured", "rows": 0})
        yield dg.AssetCheckResult(
            check_name="k8s_source_answered", passed=True, description="not configured"
        )
        yield dg.AssetCheckResult(
            check_name="k8s_stored_equals_response", passed=True, description="not configured"
        )
        return
    config = cost_config.get()
    stored = wh.count(K8S_ALLOCATIONS, days=[day])
    settled = day <= datetime.now(UTC).date() - timedelta(days=config.allocation.k8s_settle_days)
    problem = None
    try:
        df = kubecost.allocations(day=day, tenant_label=config.allocation.k8s_tenant_label)
    except ApiError as exc:
        df, problem = None, f"{kubecost.describe()} failed: {exc}"
    if df is not None and df.empty and stored and not settled:
        df, problem = None, f"{kubecost.describe()} answered no allocation for a recent day"
    if df is None:
        # Keep what is stored; the day's summary builds on it (or on no k8s cost) and says so.
        context.log.warning(f"{day}: {problem}; kept the {stored:,} stored row(s)")
        yield dg.MaterializeResult(
            metadata={"source": kubecost.describe(), "source_status": "missing", "rows": stored}
        )
        yield dg.AssetCheckResult(
            check_name="k8s_source_answered",
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{problem}; kept {stored:,} stored row(s)",
            metadata={"stored_rows_kept": stored},
        )
        yield dg.AssetCheckResult(
            check_name="k8s_stored_equals_response",
            passed=True,
            description="no answer to compare: the stored day was kept unchanged",
        )
        return
    df["tenant_id"] = map_k8s_tenants(df, config) if len(df) else None
    costs = [c for c in K8S_ALLOCATIONS.column_names if c.endswith("_cost")]
    # Idle is signed (negative when a cluster is over-committed) and kept; a negative cost on
    # any other allocation is not believable and is quarantined.
    is_idle = df["allocation_name"].eq("__idle__") if len(df) else pd.Series(dtype=bool)
    negative = ((df[costs] < 0).any(axis=1) & ~is_idle) if len(df) else pd.Series(dtype=bool)
    bad = df[negative]
    quarantine = pd.DataFrame(
        {
            "source": K8S_SOURCE,
            "day": day,
            "raw": bad.to_json(orient="records", lines=True).splitlines() if len(bad) else [],
            "reason": "negative cost component on an allocation that is not idle",
            "detected_at": datetime.now(UTC),
        }
    )
    wh.replace_where(QUARANTINE, {"source": [K8S_SOURCE], "day": [day]}, quarantine)
    good = df[~negative] if len(df) else df
    rows = wh.replace_partition(K8S_ALLOCATIONS, day, good)
    by_tenant = good.groupby(good["tenant_id"].fillna(good["allocation_name"]))["total_cost"].sum()
    top = by_tenant.sort_values(ascending=False).head(10).rename("total_cost_usd").reset_index()
    source_total = float(df["total_cost"].sum()) if len(df) else 0.0
    yield dg.MaterializeResult(
        metadata={
            "source": kubecost.describe(),
            "source_status": "answered",
            "rows": rows,
            "source_total_usd": round(source_total, 6),
            "total_cost_usd": round(float(good["total_cost"].sum()), 6) if rows else 0.0,
            "idle_cost_usd": round(float(good.loc[is_idle[~negative], "total_cost"].sum()), 6)
            if rows
            else 0.0,
            "unmapped_rows": int(good["tenant_id"].isna().sum()) if rows else 0,
            "rows_quarantined": len(quarantine),
            "top_allocations": dg.MetadataValue.md(markdown_table(top)),
        }
    )
    yield dg.AssetCheckResult(
        check_name="k8s_source_answered",
        passed=True,
        description=f"{rows:,} allocation(s) loaded, {len(quarantine):,} quarantined",
        metadata={"source_total_usd": round(source_total, 6)},
    )
    read_back = wh.read(K8S_ALLOCATIONS, days=[day], columns=["total_cost"])
    stored_total = float(read_back["total_cost"].sum()) if len(read_back) else 0.0
    quarantined_total = float(bad["total_cost"].sum()) if len(bad) else 0.0
    gap = source_total - stored_total - quarantined_total
    yield dg.AssetCheckResult(
        check_name="k8s_stored_equals_response",
        passed=abs(gap) <= 1e-6 * max(1.0, len(df)),
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"answer ${source_total:,.6f} = stored ${stored_total:,.6f} + quarantined "
            f"${quarantined_total:,.6f} (gap ${gap:,.9f})"
        ),
        metadata={
            "source_total_usd": round(source_total, 9),
            "stored_total_usd": round(stored_total, 9),
            "quarantined_total_usd": round(quarantined_total, 9),
            "gap_usd": round(gap, 9),
        },
    )


@dg.asset(
    group_name="infrastructure",
    kinds={"python", "sql"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[cloud_costs, k8s_allocations, "fx_rates"],
    check_specs=[
        dg.AssetCheckSpec(
            "infra_cost_is_conserved",
            asset="infra_cost_allocation",
            partitions_def=daily_partitions,
            blocking=True,
            description="Per source and day, the allocated total equals the source total.",
        ),
        dg.AssetCheckSpec(
            "foreign_currency_converted",
            asset="infra_cost_allocation",
            partitions_def=daily_partitions,
            description=(
                "Every cloud cost billed in another currency was converted at its charge date's "
                "rate; a row without a rate is left out of the USD totals and named here."
            ),
        ),
    ],
    description=(
        "Cloud and Kubernetes cost per tenant and day: direct cost, plus unmapped, shared and "
        "idle cost spread by `allocation.rule` (proportional to direct cost by default)."
    ),
)
@for_each_day
def infra_cost_allocation(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
):
    day = partition_day(context)
    wh = warehouse.get()
    cloud = wh.read(CLOUD_COSTS, days=[day])
    config = cost_config.get()
    # Rows billed in another currency are converted at their charge day's rate; a row with no
    # rate waits, never added into USD totals.
    foreign = cloud[cloud["needs_fx"].fillna(False).astype(bool)]
    converted, foreign = to_usd(foreign, fx_rates(wh, config, day, day))
    if len(foreign):
        context.log.warning(
            f"{day}: {len(foreign)} cloud row(s) in {sorted(foreign['currency'].unique())} "
            "left out of the USD allocation: no exchange rate for their charge date"
        )
    usd_rows = cloud[~cloud["needs_fx"].fillna(False).astype(bool)]
    ledger = pd.concat(
        [
            cloud_ledger(pd.concat([usd_rows, converted], ignore_index=True)),
            k8s_ledger(wh.read(K8S_ALLOCATIONS, days=[day])),
        ],
        ignore_index=True,
    )
    allocation = allocate(ledger, config)
    rows = wh.replace_partition(INFRA_COST_ALLOCATION, day, allocation)
    stored = wh.read(INFRA_COST_ALLOCATION, days=[day])
    balance = conservation(ledger, stored)
    by_tenant = stored.pivot_table(
        index="tenant_id", columns="source", values="cost_usd", aggfunc="sum", fill_value=0
    )
    if len(by_tenant):
        by_tenant["total_usd"] = by_tenant.sum(axis=1)
        by_tenant = by_tenant.sort_values("total_usd", ascending=False).head(10).reset_index()
    yield dg.MaterializeResult(
        metadata={
            "rows": rows,
            "rule": cost_config.get().allocation.rule,
            "total_cost_usd": round(float(stored["cost_usd"].sum()), 6),
            "shared_cost_usd": round(float(stored["shared_cost"].sum()), 6),
            "non_usd_rows_converted": len(converted),
            "non_usd_converted": dg.MetadataValue.md(markdown_table(fx_summary(converted))),
            "non_usd_rows_left_out": len(foreign),
            "top_tenants": dg.MetadataValue.md(markdown_table(by_tenant)),
        }
    )
    yield dg.AssetCheckResult(
        check_name="foreign_currency_converted",
        passed=foreign.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(foreign)} row(s) in {', '.join(sorted(foreign['currency'].unique()))} without "
            f"an exchange rate on {day}: left out of the USD totals"
            if len(foreign)
            else f"{len(converted)} row(s) in other currencies converted at their charge day's rate"
        ),
        metadata={
            "rows_left_out": len(foreign),
            "rows_converted": len(converted),
            "left_out": dg.MetadataValue.md(
                markdown_table(foreign[["currency", "provider", "service_name", "effective_cost"]])
            ),
        },
    )
    yield dg.AssetCheckResult(
        check_name="infra_cost_is_conserved",
        passed=bool(balance["conserved"].all()),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "max_gap_usd": float(balance["gap_usd"].max()) if len(balance) else 0.0,
            "by_source": dg.MetadataValue.md(markdown_table(balance)),
        },
    )


@dg.asset(
    group_name="infrastructure",
    kinds={"python", "csv", "parquet"},
    partitions_def=monthly_partitions,
    deps=[dg.AssetKey("daily_cost_summary")],
    check_specs=[
        dg.AssetCheckSpec(
            "focus_export_is_valid",
            asset="focus_export",
            partitions_def=monthly_partitions,
            description=(
                "Both files pass FOCUS 1.2 validation of every mandatory column and type, and "
                "their EffectiveCost sum equals the month's summary total."
            ),
        )
    ],
    description="The month's whole ledger (LLM, cloud, Kubernetes) as FOCUS 1.2 CSV and Parquet.",
)
def focus_export(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
    focus_exports: FocusExports,
):
    month = date.fromisoformat(context.partition_key)
    wh = warehouse.get()
    config = cost_config.get()
    days = month_days(month)
    summary = wh.read(DAILY_COST_SUMMARY, days=days)
    # Cloud rows of the days the summary holds: the export restates the ledger, nothing more.
    cloud = wh.read(CLOUD_COSTS, days=sorted(set(summary["day"])))
    # Rows billed in another currency appear as the ledger counted them: in USD at their charge
    # day's rate where it has one (their billed amounts stay in `cloud_costs`).
    foreign = cloud["needs_fx"].fillna(False).astype(bool)
    if foreign.any():
        converted, waiting = to_usd(cloud[foreign], fx_rates(wh, config, days[0], days[-1]))
        cloud = pd.concat([cloud[~foreign], converted[cloud.columns], waiting], ignore_index=True)
    focus = ledger_to_focus(summary, config=config, month=month, cloud_costs=cloud)
    paths = write_focus_month(focus, focus_exports.export_dir(), month)
    summary_total = float(summary["cost_usd"].sum())
    problems, sums = [], {}
    for path in paths:
        written = read_focus_export(path)
        problems += [f"{path.name}: {p}" for p in validate_focus(written)]
        problems += [
            f"{path.name}: {p}" for p in export_problems(written, summary, currency=config.currency)
        ]
        sums[path.suffix.lstrip(".")] = float(pd.to_numeric(written["EffectiveCost"]).sum())
    by_category = focus.groupby("x_CostCategory")["BilledCost"].sum().round(6)
    yield dg.MaterializeResult(
        metadata={
            "rows": len(focus),
            "csv": str(paths[0]),
            "parquet": str(paths[1]),
            "billed_cost_usd": round(float(focus["BilledCost"].sum()), 6),
            **{f"{k}_cost_usd": float(v) for k, v in by_category.items()},
        }
    )
    yield dg.AssetCheckResult(
        check_name="focus_export_is_valid",
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "summary_total_usd": summary_total,
            **{f"{k}_effective_cost_usd": v for k, v in sums.items()},
            "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "_none_"),
        },
    )
