"""`tenant_statements`: each tenant's monthly statement (CSV, XLSX, HTML) and FOCUS rows as files.

The files go to the report folder (`reports.output_url`: a local folder, by default under the
state directory, or any fsspec URL). `write_statements` is shared with the on-demand
`statement_job`, which writes the same files for any range of days.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotations.
from datetime import date, timedelta
from decimal import Decimal

import dagster as dg
import pandas as pd

from cost_pipeline import environment
from cost_pipeline.catalog import CLOUD_COSTS, DAILY_COST_SUMMARY
from cost_pipeline.defs.partitions import monthly_partitions
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.display import cents, to_decimal
from cost_pipeline.lib.fx import FxRates
from cost_pipeline.lib.report_files import ReportFolder, output_url
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.lib.statements import (
    StatementFiles,
    csv_total,
    in_currency,
    statement_bundle,
    xlsx_totals,
)
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.fx import fx_rates
from cost_pipeline.store.warehouse import Warehouse


def report_folder(config: CostConfig) -> ReportFolder:
    """The configured report folder (default: `reports` in the state directory)."""
    return ReportFolder(output_url(config.reports.output_url, environment.state_dir()))


def cloud_costs(wh: Warehouse, summary: pd.DataFrame) -> pd.DataFrame | None:
    """The `cloud_costs` rows of the summary's days, whose detail the FOCUS rows restate; None
    when there are none (the summary's own cloud rows are written as they are)."""
    cloud = wh.read(CLOUD_COSTS, days=sorted(set(summary["day"])))
    return None if cloud.empty else cloud


def write_statements(
    wh: Warehouse,
    config: CostConfig,
    start: date,
    end: date,
    tenant_ids: list[str] | None = None,
    fx: FxRates | None = None,
) -> tuple[ReportFolder, list[StatementFiles], pd.DataFrame]:
    """Write every tenant's statement files for `start..end` (amounts in a tenant's currency at
    `fx`, read here when not given); return the folder, the bundles and the range's
    `daily_cost_summary` rows they were made from."""
    folder = report_folder(config)
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    summary = wh.read(DAILY_COST_SUMMARY, days=days)
    cloud = cloud_costs(wh, summary)
    fx = fx or fx_rates(wh, config, start, end)
    bundles = statement_bundle(
        summary,
        config=config,
        start=start,
        end=end,
        cloud_costs=cloud,
        tenant_ids=tenant_ids,
        fx=fx,
    )
    for bundle in bundles:
        for path, data in bundle.files.items():
            folder.write(path, data)
    return folder, bundles, summary


def reconciliation(
    folder: ReportFolder,
    bundles: list[StatementFiles],
    summary: pd.DataFrame,
    fx: FxRates | None = None,
) -> pd.DataFrame:
    """Per tenant: the ledger's total to the cent beside the totals the written CSV and XLSX
    state (read back from the folder), and whether they all agree."""
    rows = []
    for bundle in bundles:
        s = bundle.statement
        # The ledger's own rows, stated in the statement's currency the same way (each day at
        # its rate), summed here independently of the statement's lines.
        mine, _, _ = in_currency(summary[summary["tenant_id"] == s.tenant_id], s.currency, fx)
        ledger = cents(sum((to_decimal(v) for v in mine["cost_usd"]), Decimal(0)))
        paths = {p.rsplit(".", 1)[1]: p for p in bundle.files if "/statement_" in p}
        from_csv = csv_total(folder.read(paths["csv"]))
        header, lines, footer = xlsx_totals(folder.read(paths["xlsx"]))
        totals = {ledger, s.total, from_csv, header, lines, footer}
        rows.append(
            {
                "tenant_id": s.tenant_id,
                "currency": s.currency,
                "ledger": float(ledger),
                "csv": float(from_csv),
                "xlsx": float(footer),
                "lines": len(s.lines),
                "reconciled": len(totals) == 1,
            }
        )
    return pd.DataFrame(
        rows, columns=["tenant_id", "currency", "ledger", "csv", "xlsx", "lines", "reconciled"]
    )


@dg.asset(
    group_name="reports",
    kinds={"python", "csv", "xlsx", "html"},
    partitions_def=monthly_partitions,
    deps=[dg.AssetKey("daily_cost_summary"), dg.AssetKey("cloud_costs")],
    check_specs=[
        dg.AssetCheckSpec(
            "statements_match_the_ledger",
            asset="tenant_statements",
            partitions_def=monthly_partitions,
            description=(
                "Each tenant's written CSV and XLSX state the month's `daily_cost_summary` total "
                "to the cent, and their lines add up to it."
            ),
        )
    ],
    description=(
        "Each tenant's statement of the month — CSV, XLSX and an HTML page with its daily chart "
        "— and its FOCUS 1.2 rows, written to the report folder (`reports.output_url`)."
    ),
)
def tenant_statements(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
):
    month = date.fromisoformat(context.partition_key)
    end = (pd.Timestamp(month) + pd.offsets.MonthEnd(0)).date()
    config = cost_config.get()
    wh = warehouse.get()
    fx = fx_rates(wh, config, month, end)
    folder, bundles, summary = write_statements(wh, config, month, end, fx=fx)
    check = reconciliation(folder, bundles, summary, fx)
    yield dg.MaterializeResult(
        metadata={
            "tenants": len(bundles),
            "files": sum(len(b.files) for b in bundles),
            "folder": folder.path(f"statements/{month:%Y-%m}"),
            "total_usd": float(sum((b.statement.total for b in bundles), Decimal(0))),
            "statements": dg.MetadataValue.md(markdown_table(check, max_rows=50)),
        }
    )
    yield dg.AssetCheckResult(
        check_name="statements_match_the_ledger",
        passed=bool(check["reconciled"].all()),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "not_reconciled": ", ".join(check.loc[~check["reconciled"], "tenant_id"]) or "none",
            "by_tenant": dg.MetadataValue.md(markdown_table(check, max_rows=50)),
        },
    )
