"""Three-way reconciliation of LLM cost: the app's log, the providers' usage, their cost reports.

Definitions (per day and provider, and per model):

- app-log cost: `priced_interactions.cost_usd`, what the app logged, priced;
- provider-usage cost: `provider_usage_priced.cost_usd`, what the provider says was used,
  priced by the same engine;
- provider-reported cost: what the provider's cost endpoint bills;
- coverage %: the share of provider-usage cost the app log explains, model by model:
  sum over models of min(app-log, provider-usage) / provider-usage x 100. A model the log
  mislabels lowers coverage even when the totals happen to agree;
- drift %: (app-log - provider-usage) / provider-usage x 100, signed: negative means the log
  misses usage (an unlogged service, calls logged at $0), positive means it over-counts;
- reported drift %: (provider-reported - provider-usage) / provider-usage x 100: our prices
  against the provider's bill (rounding, a missing discount, a wrong rate).

Models are compared without dated snapshot suffixes (`gpt-4.1-2025-04-14` is `gpt-4.1`).

Only what the ledger prices in tokens is compared here (completions, embeddings, moderations,
messages): usage and billed cost of endpoints billed in other units (images, characters,
seconds, bytes, sessions) are reconciled line by line in `lib.line_items`, against the
provider-reported cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cost_pipeline.catalog import DAILY_COST_SUMMARY, LLM_COST_RECONCILIATION
from cost_pipeline.lib.pricing import UNPRICED_STATUSES
from cost_pipeline.lib.provider_usage import ANTHROPIC, OPENAI, canonical_model
from cost_pipeline.lib.usage_endpoints import billed_in_other_units, is_ledger_priced

PROVIDERS = (OPENAI, ANTHROPIC)
UNATTRIBUTED_TENANT = "__unattributed__"
# A model only explains a gap worth naming when its own gap is at least this share of the
# provider's day; below it, per-model percentages of tiny models are noise.
MATERIAL_SHARE_PCT = 0.5
_KEYS = ["day", "provider", "model"]
_TOTAL_COLUMNS = ["requests", "input_tokens", "output_tokens", "cost_usd"]


def token_priced(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of endpoints the ledger prices in tokens (all rows of frames without endpoints)."""
    if df.empty or "endpoint" not in df.columns:
        return df
    return df.loc[is_ledger_priced(df["provider"], df["endpoint"])]


def _token_billed(df: pd.DataFrame) -> pd.DataFrame:
    """Reported cost but the line items of endpoints billed in other units."""
    if df.empty or "endpoint" not in df.columns:
        return df
    return df.loc[~billed_in_other_units(df["provider"], df["endpoint"])]


def _totals(df: pd.DataFrame, tenant_default: str | None) -> pd.DataFrame:
    """Per day, provider, canonical model and tenant: requests, input/output tokens, cost."""
    columns = [*_KEYS, "tenant_id", *_TOTAL_COLUMNS, "unpriced_requests"]
    if df.empty:
        return pd.DataFrame(columns=columns).astype({c: "float64" for c in _TOTAL_COLUMNS})
    if "model" not in df.columns and "model_or_service" in df.columns:
        df = df.rename(columns={"model_or_service": "model"})
    tenants = df["tenant_id"].astype("object")
    if tenant_default is not None:
        tenants = tenants.fillna(tenant_default)
    frame = pd.DataFrame(
        {
            "day": pd.to_datetime(df["day"]).dt.date,
            "provider": df["provider"].astype(str),
            "model": canonical_model(df["model"]).fillna("(unknown)"),
            "tenant_id": tenants,
            # Pre-aggregated frames carry `requests`; raw interactions are one request a row.
            "requests": df["requests"] if "requests" in df.columns else 1,
            "input_tokens": df["input_tokens"],
            "output_tokens": df["output_tokens"],
            "cost_usd": pd.to_numeric(df["cost_usd"]).fillna(0.0),
        }
    )
    if "unpriced_requests" in df.columns:
        frame["unpriced_requests"] = df["unpriced_requests"].fillna(0)
    elif "pricing_status" in df.columns:
        frame["unpriced_requests"] = frame["requests"].where(
            df["pricing_status"].isin(UNPRICED_STATUSES), 0
        )
    else:
        frame["unpriced_requests"] = 0
    grouped = frame.groupby([*_KEYS, "tenant_id"], dropna=False, sort=True)
    return grouped[[*_TOTAL_COLUMNS, "unpriced_requests"]].sum().reset_index()


def app_log_totals(priced_interactions: pd.DataFrame) -> pd.DataFrame:
    """The app log per day, provider, model and tenant (raw or already aggregated rows)."""
    return _totals(priced_interactions, None)


def provider_usage_totals(provider_usage_priced: pd.DataFrame) -> pd.DataFrame:
    """Provider usage per day, provider, model and mapped tenant (`__unattributed__` if none)."""
    return _totals(provider_usage_priced, UNATTRIBUTED_TENANT)


def _pct(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    den = denominator.astype(float)
    return (numerator.astype(float) / den.where(den > 0) * 100).round(4)


def reconcile(
    priced_interactions: pd.DataFrame,
    provider_usage_priced: pd.DataFrame,
    provider_reported_costs: pd.DataFrame,
) -> pd.DataFrame:
    """`llm_cost_reconciliation` rows: one per day and provider (model null), one per model."""
    provider_usage_priced = token_priced(provider_usage_priced)
    provider_reported_costs = _token_billed(provider_reported_costs)
    app = app_log_totals(priced_interactions).groupby(_KEYS)["cost_usd"].sum()
    use = provider_usage_totals(provider_usage_priced).groupby(_KEYS)["cost_usd"].sum()
    models = pd.concat(
        [app.rename("app_log_cost_usd"), use.rename("provider_usage_cost_usd")], axis=1
    ).fillna(0.0)
    providers = set(PROVIDERS) | set(provider_usage_priced.get("provider", pd.Series()).unique())
    models = models.loc[models.index.get_level_values("provider").isin(providers)].reset_index()
    reported = provider_reported_costs.assign(
        day=pd.to_datetime(provider_reported_costs["day"]).dt.date,
        model=canonical_model(provider_reported_costs["model"]),
    )
    by_model = reported.groupby(_KEYS)["amount_usd"].sum().rename("provider_reported_cost_usd")
    models = models.merge(by_model.reset_index(), on=_KEYS, how="left")
    models["explained"] = np.minimum(models["app_log_cost_usd"], models["provider_usage_cost_usd"])

    totals = models.groupby(["day", "provider"])[
        ["app_log_cost_usd", "provider_usage_cost_usd", "explained"]
    ].sum()
    by_provider = reported.groupby(["day", "provider"])["amount_usd"].sum()
    totals["provider_reported_cost_usd"] = by_provider.reindex(totals.index)
    totals = totals.reset_index().assign(model=None)

    out = pd.concat([totals, models], ignore_index=True)
    usage = out["provider_usage_cost_usd"]
    out["coverage_pct"] = _pct(out["explained"], usage)
    out["drift_pct"] = _pct(out["app_log_cost_usd"] - usage, usage)
    out["reported_drift_pct"] = _pct(out["provider_reported_cost_usd"] - usage, usage)
    out["tenant_id"] = None
    out = out.sort_values(["day", "provider", "model"], na_position="first", kind="stable")
    return LLM_COST_RECONCILIATION.conform(out)


@dataclass
class DriftVerdict:
    """How one provider's day compares; `level` is ok, warn, fail or no_data.

    `models` lists the models named in the message (at most five, largest gap first) with their
    own level; `reasons` says what set `level` (e.g. "drift -4.1% beyond 2%").
    """

    day: object
    provider: str
    level: str
    drift_pct: float | None
    coverage_pct: float | None
    models: pd.DataFrame = field(default_factory=pd.DataFrame)
    message: str = ""
    reasons: list[str] = field(default_factory=list)


def _level(drift: float | None, warn_pct: float, fail_pct: float) -> str:
    if drift is None or np.isnan(drift):
        return "fail"  # a model on one side only: the other side has nothing at all
    if abs(drift) > fail_pct:
        return "fail"
    return "warn" if abs(drift) > warn_pct else "ok"


_RANK = {"ok": 0, "warn": 1, "fail": 2}


def _model_level(drift: float | None, warn_pct: float) -> str:
    """A material model gap WARNs past `warn_pct` (or when the model is on one side only)."""
    if drift is None or np.isnan(drift):
        return "warn"
    return "warn" if abs(drift) > warn_pct else "ok"


def drift_verdicts(
    reconciliation: pd.DataFrame,
    *,
    warn_pct: float,
    fail_pct: float,
    min_coverage_pct: float | None = None,
    against: str = "app_log",
) -> list[DriftVerdict]:
    """Judge each day x provider, naming the models that explain the gap.

    - the provider's total drift: WARN past `warn_pct`, FAIL past `fail_pct`;
    - its coverage (`against="app_log"` only, when `min_coverage_pct` is given): FAIL below it;
    - each model whose gap is material (`MATERIAL_SHARE_PCT` of the provider's day): WARN past
      `warn_pct` or when it is on one side only, never FAIL by itself. A mislabelled model
      shows as a pair, one model over-counted by the log and another under-counted; the cost
      of the mislabel is what the totals (drift, coverage) judge.

    `against="app_log"` judges the app log against provider usage; `"reported"` judges the
    provider's bill against provider usage (per model only where the bill names models).
    """
    side = "app_log_cost_usd" if against == "app_log" else "provider_reported_cost_usd"
    drift_col = "drift_pct" if against == "app_log" else "reported_drift_pct"
    what = "app log" if against == "app_log" else "reported cost"
    verdicts: list[DriftVerdict] = []
    for (day, provider), rows in reconciliation.groupby(["day", "provider"], sort=True):
        total = rows.loc[rows["model"].isna()].iloc[0]
        usage = float(total["provider_usage_cost_usd"])
        if usage <= 0 or pd.isna(total[drift_col]):
            verdicts.append(
                DriftVerdict(
                    day,
                    provider,
                    "no_data",
                    None,
                    None,
                    message=f"{provider} {day}: "
                    "no provider usage or no comparison side to reconcile",
                )
            )
            continue
        drift = float(total[drift_col])
        coverage = None if pd.isna(total["coverage_pct"]) else float(total["coverage_pct"])
        levels: list[str] = []
        reasons: list[str] = []
        drift_level = _level(drift, warn_pct, fail_pct)
        if drift_level != "ok":
            levels.append(drift_level)
            limit = fail_pct if drift_level == "fail" else warn_pct
            reasons.append(f"drift {drift:+.2f}% beyond {limit:g}%")
        low_coverage = (
            against == "app_log"
            and min_coverage_pct is not None
            and coverage is not None
            and coverage < min_coverage_pct
        )
        if low_coverage:
            levels.append("fail")
            reasons.append(f"coverage {coverage:.1f}% below {min_coverage_pct:g}%")

        per_model = rows.loc[rows["model"].notna() & rows[side].notna()].copy()
        per_model["gap_usd"] = per_model[side] - per_model["provider_usage_cost_usd"]
        material = per_model["gap_usd"].abs() >= MATERIAL_SHARE_PCT / 100 * usage
        per_model = per_model.loc[material]
        per_model = per_model.assign(
            level=[
                _model_level(None if pd.isna(d) else float(d), warn_pct)
                for d in per_model[drift_col]
            ]
        )
        per_model = per_model.loc[per_model["level"] != "ok"]
        if len(per_model):
            levels.append("warn")
            reasons.append(f"{len(per_model)} model(s) beyond {warn_pct:g}%")
        level = max(levels, key=_RANK.__getitem__, default="ok")
        explain = (
            per_model.assign(abs_gap=per_model["gap_usd"].abs())
            .sort_values("abs_gap", ascending=False)
            .head(5)[["model", side, "provider_usage_cost_usd", "gap_usd", drift_col, "level"]]
            .reset_index(drop=True)
        )
        message = (
            f"{provider} {day}: {what} {drift:+.2f}% vs provider usage "
            f"(${float(total[side]):,.2f} vs ${usage:,.2f}"
            + (f", coverage {coverage:.1f}%" if against == "app_log" and coverage else "")
            + ")"
            + (f" [{level.upper()}: {'; '.join(reasons)}]" if level != "ok" else "")
            + _explanation(explain, side, drift_col, against)
        )
        verdicts.append(
            DriftVerdict(day, provider, level, drift, coverage, explain, message, reasons)
        )
    return verdicts


def _explanation(explain: pd.DataFrame, side: str, drift_col: str, against: str) -> str:
    """The named models: over-counted ones (the log says more of them than was served: a
    likely mislabel when another model is under-counted) and under-counted ones."""
    if explain.empty:
        return ""

    def named(rows: pd.DataFrame) -> str:
        return ", ".join(
            f"{r.model} ({r.gap_usd:+,.2f} USD"
            + (f", {getattr(r, drift_col):+.1f}%)" if pd.notna(getattr(r, drift_col)) else ")")
            for r in rows.itertuples(index=False)
        )

    over = explain.loc[explain["gap_usd"] > 0]
    under = explain.loc[explain["gap_usd"] < 0]
    if against != "app_log":
        return f"; gap explained by {named(explain)}"
    parts = []
    if len(over) and len(under):
        parts.append(
            f"likely mislabelled model: the log says {named(over)} "
            f"where the provider served {named(under)}"
        )
    elif len(over):
        parts.append(f"the log over-counts {named(over)}")
    else:
        parts.append(f"the log misses usage of {named(under)}")
    return "; " + "; ".join(parts)


def unattributed_summary_rows(
    priced_interactions: pd.DataFrame, provider_usage_priced: pd.DataFrame
) -> pd.DataFrame:
    """`daily_cost_summary` rows (`cost_category="unattributed"`) that top the app log up to the
    provider truth: per day, provider, model and mapped tenant (`__unattributed__` when the
    provider's project / workspace / key is not mapped), provider-usage cost minus app-log cost,
    signed. Only for the days and providers that have provider usage, so that the day's LLM
    total (app-log rows + these) equals the provider-usage cost there. Token and request
    columns carry the usage the log misses (never negative)."""
    use = provider_usage_totals(token_priced(provider_usage_priced))
    if use.empty:
        return DAILY_COST_SUMMARY.empty_frame()
    app = app_log_totals(priced_interactions)
    app = app.merge(use[["day", "provider"]].drop_duplicates(), on=["day", "provider"])
    keys = [*_KEYS, "tenant_id"]
    both = use.merge(app, on=keys, how="outer", suffixes=("_use", "_app"))
    both = both.fillna({f"{c}_{s}": 0 for c in _TOTAL_COLUMNS for s in ("use", "app")})
    out = pd.DataFrame(
        {
            "day": both["day"],
            "tenant_id": both["tenant_id"],
            "cost_category": "unattributed",
            "provider": both["provider"],
            "model_or_service": both["model"],
            "agent_id": None,
            "cost_usd": both["cost_usd_use"] - both["cost_usd_app"],
            "unpriced_requests": both["unpriced_requests_use"].fillna(0),
        }
    )
    for column in ("requests", "input_tokens", "output_tokens"):
        out[column] = (both[f"{column}_use"] - both[f"{column}_app"]).clip(lower=0)
    meaningful = out["cost_usd"].abs().round(9).gt(0) | out["requests"].gt(0)
    return DAILY_COST_SUMMARY.conform(out.loc[meaningful])
