"""A tenant's cost statement for a date range: build it from the ledger, write CSV, XLSX, HTML.

The statement restates `daily_cost_summary` for one tenant and the days `start..end`: one line
per cost category, provider and model or service (requests, tokens, amount) and one amount per
day. The total is the ledger's sum in `Decimal`, rounded once, half-even, to the cent; lines and
days are shown in cents that add up to exactly that total (largest remainder: each amount is
rounded down, and the cents left over go to the amounts that lost the most), so the statement
reconciles to the cent with the ledger and with itself. Amounts are shown through
`lib.display.format_amount`. `statement_bundle` makes every file of a range for each tenant,
with the tenant's own FOCUS 1.2 rows beside its statement.
"""

from __future__ import annotations

import base64
import csv
import io
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_FLOOR, Decimal

import pandas as pd

from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.display import CENT, cents, format_amount, to_decimal
from cost_pipeline.lib.focus_export import (
    FOCUS_VERSION,
    filter_focus,
    focus_csv,
    ledger_to_focus_range,
)
from cost_pipeline.lib.fx import FxRates
from cost_pipeline.lib.report_charts import spend_chart

LINE_KEYS = ("cost_category", "provider", "model_or_service")
CATEGORY_ORDER = {"llm": 0, "cloud": 1, "k8s": 2, "unattributed": 3}
CSV_COLUMNS = (
    "tenant_id",
    "period_start",
    "period_end",
    "cost_category",
    "provider",
    "item",
    "requests",
    "input_tokens",
    "output_tokens",
    "amount",
    "currency",
)


@dataclass(frozen=True)
class StatementLine:
    cost_category: str
    provider: str
    item: str
    requests: int
    input_tokens: int
    output_tokens: int
    amount: Decimal  # in cents, part of a set that sums to the statement total
    exact: Decimal  # the ledger's amount (nano-USD precision)


@dataclass(frozen=True)
class Statement:
    tenant_id: str
    tenant_name: str
    organization: str
    currency: str
    start: date
    end: date
    lines: list[StatementLine]
    days: list[tuple[date, Decimal]]  # every day of the range, in cents summing to `total`
    total: Decimal  # the ledger's total rounded once to the cent
    exact_total: Decimal
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """`2026-10` for a calendar month, else `2026-10-03_2026-10-17`."""
        month_end = (pd.Timestamp(self.start) + pd.offsets.MonthEnd(0)).date()
        if self.start.day == 1 and self.end == month_end:
            return f"{self.start:%Y-%m}"
        return f"{self.start}_{self.end}"

    @property
    def stem(self) -> str:
        return f"statement_{self.tenant_id}_{self.label}"


def split_cents(amounts: list[Decimal], total: Decimal) -> list[Decimal]:
    """`amounts` in cents that sum to `total` (itself in cents): each rounded down, the cents
    left over given one by one to the largest remainders (ties: the earlier amount)."""
    if not amounts:
        return []
    units = [a / CENT for a in amounts]
    floors = [int(u.to_integral_value(rounding=ROUND_FLOOR)) for u in units]
    left = int(total / CENT) - sum(floors)
    order = sorted(range(len(units)), key=lambda i: (-(units[i] - floors[i]), i))
    for i in order[: max(left, 0)]:
        floors[i] += 1
    return [Decimal(f) * CENT for f in floors]


def build_statement(
    summary: pd.DataFrame,
    *,
    tenant_id: str,
    tenant_name: str,
    organization: str,
    start: date,
    end: date,
    currency: str = "USD",
) -> Statement:
    """The statement of `tenant_id` for `start..end` (inclusive) from `daily_cost_summary`
    rows (any others in `summary` are ignored)."""
    days = pd.to_datetime(summary["day"]).dt.date
    rows = summary[(summary["tenant_id"] == tenant_id) & (days >= start) & (days <= end)]
    rows = rows.assign(
        day=pd.to_datetime(rows["day"]).dt.date,
        **{k: rows[k].fillna("").astype(str) for k in LINE_KEYS},
        exact=[to_decimal(v) for v in rows["cost_usd"]],
    )
    exact_total = sum(rows["exact"], Decimal(0))
    total = cents(exact_total)
    grouped = (
        rows.groupby(list(LINE_KEYS), sort=False)
        .agg(
            requests=("requests", "sum"),
            input_tokens=("input_tokens", "sum"),
            output_tokens=("output_tokens", "sum"),
            exact=("exact", lambda v: sum(v, Decimal(0))),
        )
        .reset_index()
    )
    grouped["_order"] = grouped["cost_category"].map(CATEGORY_ORDER).fillna(9)
    grouped = grouped.sort_values(
        ["_order", "exact", "provider", "model_or_service"],
        ascending=[True, False, True, True],
        key=lambda c: c.map(float) if c.name == "exact" else c,
    )
    amounts = split_cents(list(grouped["exact"]), total)
    lines = [
        StatementLine(
            cost_category=r.cost_category,
            provider=r.provider,
            item=r.model_or_service,
            requests=int(r.requests),
            input_tokens=int(r.input_tokens),
            output_tokens=int(r.output_tokens),
            amount=amount,
            exact=r.exact,
        )
        for r, amount in zip(grouped.itertuples(), amounts, strict=True)
    ]
    calendar = [d.date() for d in pd.date_range(start, end)]
    per_day = {d: sum(g, Decimal(0)) for d, g in rows.groupby("day")["exact"]}
    day_amounts = split_cents([per_day.get(d, Decimal(0)) for d in calendar], total)
    notes = []
    unpriced = int(rows["unpriced_requests"].fillna(0).sum()) if "unpriced_requests" in rows else 0
    if unpriced:
        notes.append(f"{unpriced:,} request(s) have no or an incomplete price and add no cost.")
    return Statement(
        tenant_id=tenant_id,
        tenant_name=tenant_name,
        organization=organization,
        currency=currency,
        start=start,
        end=end,
        lines=lines,
        days=list(zip(calendar, day_amounts, strict=True)),
        total=total,
        exact_total=exact_total,
        notes=notes,
    )


def statement_csv(statement: Statement) -> bytes:
    """One row per line (amounts in cents as plain decimals), then a `TOTAL` row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    head = [statement.tenant_id, statement.start.isoformat(), statement.end.isoformat()]
    for line in statement.lines:
        writer.writerow(
            [
                *head,
                line.cost_category,
                line.provider,
                line.item,
                line.requests,
                line.input_tokens,
                line.output_tokens,
                f"{line.amount:.2f}",
                statement.currency,
            ]
        )
    writer.writerow(
        [
            *head,
            "TOTAL",
            "",
            "",
            sum(li.requests for li in statement.lines),
            sum(li.input_tokens for li in statement.lines),
            sum(li.output_tokens for li in statement.lines),
            f"{statement.total:.2f}",
            statement.currency,
        ]
    )
    return out.getvalue().encode()


def statement_xlsx(statement: Statement) -> bytes:
    """A workbook: `Statement` (the header, the lines and the total, amounts as numbers with
    two decimals) and `Daily` (the amount of every day)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    sheet.title = "Statement"
    bold = Font(bold=True)
    money = "#,##0.00"
    for label, value in (
        ("Statement", statement.organization),
        ("Tenant", f"{statement.tenant_name} ({statement.tenant_id})"),
        ("Period", f"{statement.start} to {statement.end}"),
        ("Currency", statement.currency),
        ("Total", float(statement.total)),
    ):
        sheet.append([label, value])
        sheet.cell(sheet.max_row, 1).font = bold
    sheet.cell(sheet.max_row, 2).number_format = money
    sheet.append([])
    header = ["Category", "Provider", "Item", "Requests", "Input tokens", "Output tokens"]
    sheet.append([*header, "Amount"])
    for cell in sheet[sheet.max_row]:
        cell.font = bold
    for line in statement.lines:
        sheet.append(
            [
                line.cost_category,
                line.provider,
                line.item,
                line.requests,
                line.input_tokens,
                line.output_tokens,
                float(line.amount),
            ]
        )
        sheet.cell(sheet.max_row, 7).number_format = money
    sheet.append(["Total", "", "", "", "", "", float(statement.total)])
    sheet.cell(sheet.max_row, 1).font = bold
    sheet.cell(sheet.max_row, 7).font = bold
    sheet.cell(sheet.max_row, 7).number_format = money
    for column, width in zip("ABCDEFG", (14, 14, 36, 12, 16, 16, 14), strict=True):
        sheet.column_dimensions[column].width = width
    daily = book.create_sheet("Daily")
    daily.append(["Day", "Amount"])
    for cell in daily[1]:
        cell.font = bold
    for day, amount in statement.days:
        daily.append([day, float(amount)])
        daily.cell(daily.max_row, 1).number_format = "yyyy-mm-dd"
        daily.cell(daily.max_row, 2).number_format = money
    daily.append(["Total", float(statement.total)])
    daily.cell(daily.max_row, 2).number_format = money
    daily.column_dimensions["A"].width = 14
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


HTML_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ s.organization }} — cost statement {{ s.tenant_name }} {{ s.label }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; border-top: 2px solid #222; }
</style></head>
<body>
<h1>Cost statement — {{ s.tenant_name }}</h1>
<p>{{ s.organization }} · tenant <code>{{ s.tenant_id }}</code> ·
{{ s.start }} to {{ s.end }} · amounts in {{ s.currency }}</p>
<p class="total">Total: <strong>{{ money(s.total) }}</strong></p>
{% if chart %}<img alt="Daily spend of {{ s.tenant_name }}"
 src="data:image/png;base64,{{ chart }}">{% endif %}
<table>
<tr><th>Category</th><th>Provider</th><th>Item</th><th class="num">Requests</th>
<th class="num">Input tokens</th><th class="num">Output tokens</th><th class="num">Amount</th></tr>
{% for line in s.lines %}<tr><td>{{ line.cost_category }}</td><td>{{ line.provider }}</td>
<td>{{ line.item }}</td><td class="num">{{ "{:,}".format(line.requests) }}</td>
<td class="num">{{ "{:,}".format(line.input_tokens) }}</td>
<td class="num">{{ "{:,}".format(line.output_tokens) }}</td>
<td class="num">{{ money(line.amount) }}</td></tr>
{% endfor %}<tr class="total"><td colspan="6">Total</td>
<td class="num">{{ money(s.total) }}</td></tr>
</table>
{% for note in s.notes %}<p><em>{{ note }}</em></p>{% endfor %}
</body></html>
"""


def statement_html(statement: Statement, chart_png: bytes | None = None) -> str:
    """A self-contained page: the header, the chart (embedded PNG), the lines and the total."""
    from jinja2 import Environment

    env = Environment(autoescape=True)
    template = env.from_string(HTML_TEMPLATE)
    return template.render(
        s=statement,
        chart=base64.b64encode(chart_png).decode() if chart_png else None,
        money=lambda amount: format_amount(amount, statement.currency),
    )


@dataclass(frozen=True)
class StatementFiles:
    """A tenant's statement and its files, by path relative to the report folder."""

    statement: Statement
    files: dict[str, bytes]


def statement_bundle(
    summary: pd.DataFrame,
    *,
    config: CostConfig,
    start: date,
    end: date,
    cloud_costs: pd.DataFrame | None = None,
    tenant_ids: list[str] | None = None,
    fx: FxRates | None = None,
) -> list[StatementFiles]:
    """For each configured tenant (or those of `tenant_ids`): its statement for `start..end` as
    CSV, XLSX and an HTML page with its daily chart, and its FOCUS 1.2 rows of the range (its
    share of unmapped cloud cost included), under `statements/<label>/<tenant>/`."""
    focus = ledger_to_focus_range(
        summary, config=config, start=start, end=end, cloud_costs=cloud_costs
    )
    out = []
    for tenant in config.tenants:
        if tenant_ids and tenant.id not in tenant_ids:
            continue
        rows, currency, note = in_currency(
            summary[summary["tenant_id"] == tenant.id], tenant.currency or config.currency, fx
        )
        statement = build_statement(
            rows,
            tenant_id=tenant.id,
            tenant_name=tenant.name,
            organization=config.organization,
            start=start,
            end=end,
            currency=currency,
        )
        if note:
            statement.notes.append(note)
        daily = pd.Series(
            [float(a) for _, a in statement.days], index=[d for d, _ in statement.days]
        )
        chart = spend_chart(
            daily, title=f"{tenant.name}, {statement.label}", currency=statement.currency
        )
        folder = f"statements/{statement.label}/{tenant.id}"
        mine = filter_focus(focus, tenant_ids=[tenant.id])
        files = {
            f"{folder}/{statement.stem}.csv": statement_csv(statement),
            f"{folder}/{statement.stem}.xlsx": statement_xlsx(statement),
            f"{folder}/{statement.stem}.html": statement_html(statement, chart).encode(),
            f"{folder}/focus-{FOCUS_VERSION}_{tenant.id}_{statement.label}.csv": focus_csv(mine),
        }
        out.append(StatementFiles(statement, files))
    return out


def csv_total(data: bytes) -> Decimal:
    """The `TOTAL` row's amount of a statement CSV (what a reader of the file sees)."""
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    return Decimal(next(r["amount"] for r in rows if r["cost_category"] == "TOTAL"))


def xlsx_totals(data: bytes) -> tuple[Decimal, Decimal, Decimal]:
    """A statement workbook's header total, the sum of its lines and its `Total` line."""
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(data), read_only=True)["Statement"]
    rows = list(sheet.iter_rows(values_only=True))
    header = next(r[1] for r in rows if r[0] == "Total" and r[1] not in (None, ""))
    start = next(i for i, r in enumerate(rows) if r[0] == "Category") + 1
    lines = [r for r in rows[start:] if r[0] not in (None, "Total")]
    footer = next(r[6] for r in rows[start:] if r[0] == "Total")
    as_cents = [cents(v) for v in (header, sum(cents(r[6]) for r in lines), footer)]
    return as_cents[0], as_cents[1], as_cents[2]


def in_currency(
    rows: pd.DataFrame, currency: str, fx: FxRates | None, ledger_currency: str = "USD"
) -> tuple[pd.DataFrame, str, str | None]:
    """A tenant's summary rows with `cost_usd` stated in `currency`, each day at that day's
    rate (`lib.fx`), the currency they are in, and a note for the statement. Without a rate
    for every day the rows stay in the ledger currency, and the note says why: a statement is
    never partly converted."""
    if currency == ledger_currency or rows.empty:
        return rows, ledger_currency if rows.empty else currency, None
    if fx is None:
        return rows, ledger_currency, f"No exchange rates: stated in {ledger_currency}."
    rates = fx.usd_per_unit(pd.Series(currency, index=rows.index), rows["day"])
    rates.index = rows.index
    missing = sorted({str(d) for d in rows.loc[rates["usd_per_unit"].isna(), "day"]})
    if missing:
        return (
            rows,
            ledger_currency,
            (
                f"No {currency} rate for {', '.join(missing[:5])}"
                f"{' …' if len(missing) > 5 else ''}: stated in {ledger_currency}."
            ),
        )
    converted = [
        (to_decimal(v) / to_decimal(r)).quantize(Decimal("0.000000001"))
        for v, r in zip(rows["cost_usd"], rates["usd_per_unit"], strict=True)
    ]
    low, high = rates["usd_per_unit"].min(), rates["usd_per_unit"].max()
    note = (
        f"Converted from {ledger_currency} at each day's ECB reference rate "
        f"({1 / high:.6f}–{1 / low:.6f} {currency} per {ledger_currency})."
    )
    return rows.assign(cost_usd=converted), currency, note
