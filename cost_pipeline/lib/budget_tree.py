"""The budget hierarchy: periods with a reset day, rollover, an exact roll-up, node status.

The organization, its departments and teams (`config.budget_hierarchy`) each have a budget per
period. Everything here is pure; `store.budget_tree` reads the spend it asks for.

Periods run from a local reset day to the next (`lib.budget_periods`).

Spend. A node's spend in a period is the whole spend (LLM calls by their exact instant; cloud,
Kubernetes and unattributed cost by local calendar date, as `lib.periods` counts them) of every
tenant below it, measured in the node's own period window. Each tenant's spend is quantized to
nano-USD once; from there the roll-up is integer arithmetic, so in every window each node equals
its own tenants plus its children exactly, and the organization equals the sum of all tenants.
The organization holds the tenants attached to no node.

Rollover. The limit of a period is `monthly_usd` plus what rolls over from the previous period:
its unused base budget, max(0, monthly_usd - previous spend); `capped` carries at most
`rollover_cap_usd`, `full` all of it, `none` nothing. What rolled into the previous period does
not roll on (it is used first, or lost), so a limit depends on one past period only and never
grows without bound; overspend is never carried: the next period starts from its own budget. A
previous period that began before the first daily partition (`history_start`) carries nothing,
since its spend is not known.

Pooling. A pooled team's budget covers its tenants' combined spend. A team that is not pooled
gives each tenant the budget as its own allowance: each tenant is a `member` node under the team
(id `team:<team>/<tenant>`), and the team's own row reports the combined spend without a limit.

Status, with `u` = spend / limit in percent: `exceeded` (u >= 100), `critical` (u >= 90),
`warning` (u >= 75), else `ok` (always without a limit). Thresholds may exceed 100 %.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import pandas as pd

from cost_pipeline.catalog.budget_tree import BUDGET_NODE_STATUS
from cost_pipeline.lib.budget_periods import (
    BudgetPeriod,
    Window,
    budget_periods_overlapping_day,
    utc_day_window,
)
from cost_pipeline.lib.budgets import (
    CRITICAL_PCT,
    RUN_RATE_ALERT_MIN_DAYS,
    WARNING_PCT,
    highest_threshold,
)
from cost_pipeline.lib.config import BudgetNode, CostConfig, NodeBudget
from cost_pipeline.lib.periods import as_utc

NANO = 10**9
ORGANIZATION = "organization"


def to_nano(value: Decimal | float | int | str) -> int:
    """USD as integer nano-USD, rounded half-even (a float is read as its shortest repr)."""
    usd = Decimal(repr(float(value))) if isinstance(value, float) else Decimal(value)
    return int(usd.scaleb(9).to_integral_value(ROUND_HALF_EVEN))


def from_nano(nano: int) -> float:
    return float(Decimal(nano).scaleb(-9))


# -- the tree ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One node of the hierarchy, resolved: its calendar and budget set, its id qualified
    (`organization`, `department:<id>`, `team:<id>`, `team:<id>/<tenant>` for a member)."""

    id: str
    kind: str  # organization | department | team | member
    name: str
    parent: str | None
    tenants: tuple[str, ...]  # attached to this node directly
    timezone: str
    reset_day: int
    budget: NodeBudget
    thresholds: tuple[float, ...]
    pooled: bool = True
    children: tuple[str, ...] = ()


def node_key(node: BudgetNode) -> str:
    return f"{node.kind}:{node.id}"


def build_tree(config: CostConfig) -> list[Node]:
    """Every node of the configured hierarchy, parents before their children."""
    h = config.budget_hierarchy
    by_id = {n.id: n for n in h.nodes}
    defaults = tuple(sorted(config.default_thresholds))

    def thresholds(budget: NodeBudget) -> tuple[float, ...]:
        return tuple(sorted(budget.thresholds)) if budget.thresholds else defaults

    def calendar(node: BudgetNode) -> tuple[str, int]:
        zone, reset = node.timezone, node.reset_day
        up = node.parent
        while (zone is None or reset is None) and up is not None:
            parent = by_id[up]
            zone, reset = zone or parent.timezone, reset or parent.reset_day
            up = parent.parent
        return zone or h.timezone, reset or h.reset_day

    attached = {t for n in h.nodes for t in n.tenants}
    nodes: dict[str, Node] = {
        ORGANIZATION: Node(
            id=ORGANIZATION,
            kind="organization",
            name=config.organization,
            parent=None,
            tenants=tuple(t.id for t in config.tenants if t.id not in attached),
            timezone=h.timezone,
            reset_day=h.reset_day,
            budget=h.budget,
            thresholds=thresholds(h.budget),
        )
    }
    children: dict[str, list[str]] = {ORGANIZATION: []}
    for n in h.nodes:
        key = node_key(n)
        zone, reset = calendar(n)
        parent = node_key(by_id[n.parent]) if n.parent is not None else ORGANIZATION
        children.setdefault(parent, []).append(key)
        children.setdefault(key, [])
        common = {"timezone": zone, "reset_day": reset, "thresholds": thresholds(n.budget)}
        # Unpooled: the budget is each tenant's (a member node's); the team itself has none.
        nodes[key] = Node(
            id=key,
            kind=n.kind,
            name=n.name or n.id,
            parent=parent,
            tenants=tuple(n.tenants) if n.pooled else (),
            budget=n.budget if n.pooled else NodeBudget(),
            pooled=n.pooled,
            **common,
        )
        for tenant in () if n.pooled else n.tenants:
            member = f"{key}/{tenant}"
            children[key].append(member)
            children[member] = []
            nodes[member] = Node(
                id=member,
                kind="member",
                name=f"{n.name or n.id} / {tenant}",
                parent=key,
                tenants=(tenant,),
                budget=n.budget,
                **common,
            )
    resolved = {k: replace(v, children=tuple(children[k])) for k, v in nodes.items()}
    ordered: list[Node] = []
    todo = [ORGANIZATION]
    while todo:
        node = resolved[todo.pop(0)]
        ordered.append(node)
        todo.extend(node.children)
    return ordered


@dataclass(frozen=True)
class Spend:
    """Spend in integer nano-USD: the LLM part and the rest (cloud, Kubernetes, unattributed)."""

    llm: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.llm + self.other

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.llm + other.llm, self.other + other.other)


ZERO = Spend()


@dataclass(frozen=True)
class RollUp:
    """A node's spend in one window: its own tenants', its children's, and their sum."""

    tenants: Spend
    children: Spend

    @property
    def spend(self) -> Spend:
        return self.tenants + self.children


def roll_up(tree: Sequence[Node], tenant_spend: Mapping[str, Spend]) -> dict[str, RollUp]:
    """Every node's spend from its tenants' (all measured in one window), children first."""
    out: dict[str, RollUp] = {}
    for node in reversed(tree):
        own = sum((tenant_spend.get(t, ZERO) for t in node.tenants), ZERO)
        below = sum((out[c].spend for c in node.children), ZERO)
        out[node.id] = RollUp(tenants=own, children=below)
    return out


def subtree_tenants(tree: Sequence[Node]) -> dict[str, int]:
    """How many tenants each node covers."""
    counts: dict[str, int] = {}
    for node in reversed(tree):
        counts[node.id] = len(node.tenants) + sum(counts[c] for c in node.children)
    return counts


def rollover_nano(budget: NodeBudget, previous_spend: int | None) -> int:
    """What the unused budget of the previous period adds to this one (see the module doc)."""
    if budget.rollover == "none" or budget.monthly_usd is None or previous_spend is None:
        return 0
    unused = max(0, to_nano(budget.monthly_usd) - previous_spend)
    if budget.rollover == "capped" and budget.rollover_cap_usd is not None:
        return min(unused, to_nano(budget.rollover_cap_usd))
    return unused


# -- one day -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodePeriod:
    """A node's period overlapping the day, and the previous one whose unused budget rolls over
    (None: no rollover, or the previous period began before the history)."""

    node: Node
    period: BudgetPeriod
    previous: BudgetPeriod | None


def end_of_day(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def plan_day(tree: Sequence[Node], day: date, history_start: date) -> list[NodePeriod]:
    """Every node's periods overlapping UTC day `day` (two when one ends during it)."""
    plans = []
    for node in tree:
        for period in budget_periods_overlapping_day(day, node.timezone, node.reset_day):
            previous = period.previous()
            carries = node.budget.rollover != "none" and previous.first_day >= history_start
            plans.append(NodePeriod(node, period, previous if carries else None))
    return plans


def windows(plans: Iterable[NodePeriod], day: date, as_of: datetime) -> set[Window]:
    """The spend windows `node_status` needs for `plans` of `day` as of `as_of`."""
    out = {utc_day_window(day)}
    for plan in plans:
        out.add(plan.period.window(as_of))
        if plan.previous is not None:
            out.add(plan.previous.window(as_of))
    return out


def node_status(
    tree: Sequence[Node],
    plans: Sequence[NodePeriod],
    spend: Mapping[Window, Mapping[str, Spend]],
    *,
    day: date,
    as_of: datetime,
) -> pd.DataFrame:
    """`budget_node_status` rows of `day`: one per node and period overlapping the day.

    `spend` holds every tenant's spend in each window of `windows(plans, day, as_of)`.
    """
    rolled: dict[Window, dict[str, RollUp]] = {}

    def in_window(window: Window) -> dict[str, RollUp]:
        if window not in rolled:
            rolled[window] = roll_up(tree, spend.get(window, {}))
        return rolled[window]

    covered = subtree_tenants(tree)
    today = in_window(utc_day_window(day))
    rows = []
    for plan in plans:
        node, period = plan.node, plan.period
        now = in_window(period.window(as_of))[node.id]
        previous = (
            in_window(plan.previous.window(as_of))[node.id].spend.total
            if plan.previous is not None
            else None
        )
        carried = rollover_nano(node.budget, previous)
        monthly = node.budget.monthly_usd
        limit = to_nano(monthly) + carried if monthly is not None else None
        utilization = now.spend.total / limit * 100 if limit else None
        daily = node.budget.daily_usd
        day_total = today[node.id].spend.total
        rows.append(
            {
                "day": day,
                "node_id": node.id,
                "node_kind": node.kind,
                "parent_id": node.parent,
                "name": node.name,
                "period": period.key,
                "timezone": period.timezone,
                "reset_day": period.reset_day,
                "period_start": period.start,
                "period_end": period.end,
                "as_of": min(as_utc(as_of), period.end),
                "pooled": node.pooled,
                "tenant_count": covered[node.id],
                "spend_usd": from_nano(now.spend.total),
                "llm_cost_usd": from_nano(now.spend.llm),
                "other_cost_usd": from_nano(now.spend.other),
                "tenants_spend_usd": from_nano(now.tenants.total),
                "children_spend_usd": from_nano(now.children.total),
                "day_spend_usd": from_nano(day_total),
                "budget_monthly_usd": _usd(monthly),
                "rollover": node.budget.rollover,
                "previous_spend_usd": None if previous is None else from_nano(previous),
                "rollover_usd": from_nano(carried),
                "limit_usd": None if limit is None else from_nano(limit),
                "budget_daily_usd": _usd(daily),
                "utilization_pct": None if utilization is None else round(utilization, 4),
                "daily_utilization_pct": (
                    round(day_total / to_nano(daily) * 100, 4) if daily else None
                ),
                "threshold_reached": highest_threshold(utilization, list(node.thresholds)),
                "status": status_of(utilization),
            }
        )
    return BUDGET_NODE_STATUS.conform(pd.DataFrame(rows, columns=BUDGET_NODE_STATUS.column_names))


def _usd(value: Decimal | None) -> float | None:
    return None if value is None else from_nano(to_nano(value))


def status_of(utilization_pct: float | None) -> str:
    u = utilization_pct or 0.0
    if u >= 100:
        return "exceeded"
    if u >= CRITICAL_PCT:
        return "critical"
    return "warning" if u >= WARNING_PCT else "ok"


def alert_facts(status: pd.DataFrame) -> pd.DataFrame:
    """The alertable facts of `budget_node_status` rows, in `lib.budgets.alert_facts`' shape,
    the node id in `tenant_id`: the highest threshold reached per node and period; a forecast
    breach when the run rate projects the period over its limit, once `RUN_RATE_ALERT_MIN_DAYS`
    of it are behind (nodes have no forecast of their own; the same rule as a tenant without
    one); and a daily budget reached (`daily_limit`, once per node and UTC day)."""
    columns = ["tenant_id", "period", "kind", "ref"]
    if status.empty:
        return pd.DataFrame(columns=columns)
    thr = status[status["threshold_reached"].notna()]
    threshold = pd.DataFrame(
        {
            "tenant_id": thr["node_id"].astype(str),
            "period": thr["period"].astype(str),
            "kind": "budget_threshold",
            "ref": thr["threshold_reached"].map(lambda v: f"{v:g}"),
        },
        columns=columns,
    )
    start, end = pd.to_datetime(status["period_start"]), pd.to_datetime(status["period_end"])
    as_of = pd.to_datetime(status["as_of"])
    elapsed = (as_of - start).dt.total_seconds().clip(lower=1.0)
    projected = status["spend_usd"] * (end - start).dt.total_seconds() / elapsed
    fc = status[
        status["limit_usd"].notna()
        & (status["spend_usd"] < status["limit_usd"])
        & (projected > status["limit_usd"])
        & (elapsed / 86_400 >= RUN_RATE_ALERT_MIN_DAYS)
    ]
    forecast = pd.DataFrame(
        {
            "tenant_id": fc["node_id"].astype(str),
            "period": fc["period"].astype(str),
            "kind": "forecast_breach",
            "ref": "forecast",
        },
        columns=columns,
    )
    over = status[(status["daily_utilization_pct"] >= 100) & (as_of < end)]
    daily = pd.DataFrame(
        {
            "tenant_id": over["node_id"].astype(str),
            "period": over["period"].astype(str),
            "kind": "daily_limit",
            "ref": over["day"].astype(str),
        },
        columns=columns,
    )
    return pd.concat([threshold, forecast, daily], ignore_index=True)


def roll_up_mismatches(status: pd.DataFrame) -> list[str]:
    """What breaks the roll-up in stored `budget_node_status` rows (empty: every sum is exact).

    Each row's spend is its tenants' plus its children's, and its LLM plus other part; and a
    parent's children's spend is the sum of its children's rows of the same period window,
    compared where every child has a row in that window (a child with its own calendar is
    measured in its parent's window only inside the parent's figure).
    """
    problems = []
    nano = {c: status[c].map(to_nano) for c in _MONEY_SUMS}
    parts = nano["tenants_spend_usd"] + nano["children_spend_usd"]
    for i in status.index[(parts != nano["spend_usd"])]:
        problems.append(f"{status.at[i, 'node_id']} {status.at[i, 'period']}: tenants + children")
    split = nano["llm_cost_usd"] + nano["other_cost_usd"]
    for i in status.index[(split != nano["spend_usd"])]:
        problems.append(f"{status.at[i, 'node_id']} {status.at[i, 'period']}: llm + other")
    frame = status.assign(spend_nano=nano["spend_usd"], children_nano=nano["children_spend_usd"])
    kids = frame.groupby("parent_id")["node_id"].agg(lambda ids: set(ids))
    for _, parent in frame[frame["node_id"].isin(kids.index)].iterrows():
        same = frame[
            (frame["parent_id"] == parent["node_id"])
            & (frame["period_start"] == parent["period_start"])
            & (frame["period_end"] == parent["period_end"])
        ]
        if set(same["node_id"]) == kids[parent["node_id"]]:
            total = int(same["spend_nano"].sum())
            if total != parent["children_nano"]:
                problems.append(
                    f"{parent['node_id']} {parent['period']}: children rows sum to "
                    f"{from_nano(total)} USD, not {from_nano(parent['children_nano'])}"
                )
    return problems


_MONEY_SUMS = (
    "spend_usd",
    "llm_cost_usd",
    "other_cost_usd",
    "tenants_spend_usd",
    "children_spend_usd",
)
