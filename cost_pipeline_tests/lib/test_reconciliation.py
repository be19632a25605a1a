"""Reconciliation math: coverage, drift, the verdicts that name models, and unattributed rows."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from cost_pipeline.catalog import DAILY_COST_SUMMARY
from cost_pipeline.lib.reconciliation import (
    UNATTRIBUTED_TENANT,
    drift_verdicts,
    reconcile,
    unattributed_summary_rows,
)

D1, D2 = date(2026, 9, 1), date(2026, 9, 2)


def app_log(rows: list[tuple]) -> pd.DataFrame:
    """(day, provider, model, tenant, cost) -> interaction rows, one request each."""
    return pd.DataFrame(
        [
            {
                "day": d,
                "provider": p,
                "model": m,
                "tenant_id": t,
                "cost_usd": c,
                "input_tokens": 100,
                "output_tokens": 10,
                "pricing_status": "priced",
            }
            for d, p, m, t, c in rows
        ]
    )


def usage(rows: list[tuple]) -> pd.DataFrame:
    """(day, provider, model, tenant or None, cost, requests) -> provider_usage_priced rows."""
    return pd.DataFrame(
        [
            {
                "day": d,
                "provider": p,
                "model": m,
                "tenant_id": t,
                "cost_usd": c,
                "requests": r,
                "input_tokens": 100 * r,
                "output_tokens": 10 * r,
                "pricing_status": "priced",
            }
            for d, p, m, t, c, r in rows
        ]
    )


def reported(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"day": d, "provider": p, "model": m, "amount_usd": a} for d, p, m, a in rows],
        columns=["day", "provider", "model", "amount_usd"],
    )


# The log says gpt-4.1-mini for calls the provider served as gpt-4.1 ($30 of them).
LOG = app_log(
    [
        (D1, "openai", "gpt-4.1-mini", "acme", 40.0),
        (D1, "openai", "gpt-4.1-mini", "acme", 20.0),
        (D1, "openai", "gpt-4.1", "birchwood", 40.0),
        (D1, "anthropic", "claude-sonnet-4-5", "acme", 50.0),
    ]
)
USAGE = usage(
    [
        (D1, "openai", "gpt-4.1-mini-2025-04-14", "acme", 30.0, 1),
        (D1, "openai", "gpt-4.1", "acme", 30.0, 1),
        (D1, "openai", "gpt-4.1", "birchwood", 40.0, 1),
        (D1, "anthropic", "claude-sonnet-4-5-20250929", "acme", 50.0, 1),
        (D1, "anthropic", "claude-sonnet-4-5-20250929", None, 1.0, 1),
    ]
)
REPORTED = reported(
    [
        (D1, "openai", "gpt-4.1-mini", 30.004),
        (D1, "openai", "gpt-4.1", 69.996),
        (D1, "anthropic", "claude-sonnet-4-5-20250929", 51.0),
    ]
)


def test_totals_coverage_and_drift_per_provider_and_model() -> None:
    recon = reconcile(LOG, USAGE, REPORTED)
    openai = recon.loc[(recon["provider"] == "openai") & recon["model"].isna()].iloc[0]
    assert openai["app_log_cost_usd"] == 100.0
    assert openai["provider_usage_cost_usd"] == 100.0
    assert openai["provider_reported_cost_usd"] == pytest.approx(100.0)
    assert openai["drift_pct"] == 0.0  # the totals agree ...
    assert openai["coverage_pct"] == 70.0  # ... but $30 is explained by the wrong model
    mini = recon.loc[recon["model"] == "gpt-4.1-mini"].iloc[0]
    assert mini["drift_pct"] == 100.0 and mini["coverage_pct"] == 100.0
    big = recon.loc[recon["model"] == "gpt-4.1"].iloc[0]
    assert big["drift_pct"] == pytest.approx(-30 / 70 * 100, abs=1e-4)
    anthropic = recon.loc[(recon["provider"] == "anthropic") & recon["model"].isna()].iloc[0]
    assert anthropic["drift_pct"] == pytest.approx(-1 / 51 * 100, abs=1e-4)
    assert anthropic["reported_drift_pct"] == 0.0


def test_verdict_names_the_mislabelled_model() -> None:
    recon = reconcile(LOG, USAGE, REPORTED)
    verdicts = {v.provider: v for v in drift_verdicts(recon, warn_pct=2, fail_pct=10)}
    openai = verdicts["openai"]
    # The totals agree: a mislabel alone moves cost between models, a warning naming them.
    assert openai.level == "warn"
    assert set(openai.models["model"]) == {"gpt-4.1-mini", "gpt-4.1"}
    assert "openai 2026-09-01" in openai.message
    assert "likely mislabelled model: the log says gpt-4.1-mini" in openai.message
    assert "the provider served gpt-4.1 (" in openai.message
    assert verdicts["anthropic"].level == "ok"  # -1.96 %, just inside the warning line


def test_coverage_below_the_limit_is_an_error() -> None:
    # $30 of $100 explained by the wrong model: coverage 70 %.
    recon = reconcile(LOG, USAGE, REPORTED)
    verdicts = drift_verdicts(recon, warn_pct=2, fail_pct=10, min_coverage_pct=85)
    openai = next(v for v in verdicts if v.provider == "openai")
    assert openai.level == "fail"
    assert openai.reasons[0] == "coverage 70.0% below 85%"
    assert "[FAIL: coverage 70.0% below 85%; 2 model(s) beyond 2%]" in openai.message
    loose = drift_verdicts(recon, warn_pct=2, fail_pct=10, min_coverage_pct=60)
    assert next(v for v in loose if v.provider == "openai").level == "warn"


def test_a_model_gap_warns_but_never_fails_by_itself() -> None:
    # Half of gpt-4.1's usage is missing from the log (-50 %), but it is 4 % of the provider's
    # day: the provider's drift (-2 %) and coverage (98 %) are fine, so the model only warns.
    log = app_log([(D1, "openai", "gpt-4o", "acme", 96.0), (D1, "openai", "gpt-4.1", "acme", 2.0)])
    use = usage(
        [(D1, "openai", "gpt-4o", "acme", 96.0, 1), (D1, "openai", "gpt-4.1", "acme", 4.0, 1)]
    )
    [verdict] = drift_verdicts(
        reconcile(log, use, reported([])), warn_pct=2.5, fail_pct=10, min_coverage_pct=85
    )
    assert verdict.level == "warn"
    assert verdict.models["model"].tolist() == ["gpt-4.1"]
    assert verdict.models["level"].tolist() == ["warn"]
    assert "the log misses usage of gpt-4.1 (-2.00 USD, -50.0%)" in verdict.message


@pytest.mark.parametrize(("unlogged", "level"), [(0.5, "ok"), (3.0, "warn"), (15.0, "fail")])
def test_unlogged_usage_levels(unlogged: float, level: str) -> None:
    log = app_log([(D1, "openai", "gpt-4.1", "acme", 100.0 - unlogged)])
    use = usage([(D1, "openai", "gpt-4.1", "acme", 100.0, 1)])
    [verdict] = drift_verdicts(reconcile(log, use, reported([])), warn_pct=2, fail_pct=10)
    assert verdict.level == level
    assert verdict.drift_pct == pytest.approx(-unlogged)


def test_no_provider_usage_is_no_data_not_a_failure() -> None:
    recon = reconcile(LOG, usage([]).reindex(columns=USAGE.columns), reported([]))
    verdicts = drift_verdicts(recon, warn_pct=2, fail_pct=10)
    assert {v.level for v in verdicts} == {"no_data"}
    assert recon["coverage_pct"].isna().all()


def test_reported_verdict_judges_the_bill() -> None:
    bill = reported([(D1, "openai", "gpt-4.1", 112.0)])
    use = usage([(D1, "openai", "gpt-4.1", "acme", 100.0, 1)])
    recon = reconcile(app_log([]).reindex(columns=LOG.columns), use, bill)
    [verdict] = drift_verdicts(recon, warn_pct=2, fail_pct=10, against="reported")
    assert verdict.level == "fail" and "reported cost +12.00%" in verdict.message


def test_unattributed_rows_make_llm_total_equal_provider_truth() -> None:
    log = pd.concat([LOG, app_log([(D2, "openai", "gpt-4.1", "acme", 5.0)])], ignore_index=True)
    rows = unattributed_summary_rows(log, USAGE)
    assert list(rows.columns) == DAILY_COST_SUMMARY.column_names
    assert set(rows["cost_category"]) == {"unattributed"}
    assert D2 not in set(rows["day"])  # no provider usage that day: nothing to top up
    for provider in ("openai", "anthropic"):
        app_total = log.loc[(log["day"] == D1) & (log["provider"] == provider), "cost_usd"].sum()
        extra = rows.loc[rows["provider"] == provider, "cost_usd"].sum()
        truth = USAGE.loc[USAGE["provider"] == provider, "cost_usd"].sum()
        assert app_total + extra == pytest.approx(truth, abs=1e-9)
    acme = rows.set_index(["tenant_id", "model_or_service"])["cost_usd"]
    assert acme[("acme", "gpt-4.1-mini")] == -30.0
    assert acme[("acme", "gpt-4.1")] == 30.0
    assert acme[(UNATTRIBUTED_TENANT, "claude-sonnet-4-5")] == 1.0
    assert ("birchwood", "gpt-4.1") not in acme.index  # fully explained: no row
    assert (rows[["requests", "input_tokens", "output_tokens"]] >= 0).all().all()
