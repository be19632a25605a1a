"""Cost recommendations from a window of re-priced calls: figures, confidence, assumptions, and
each recommendation's status from one day to the next (the weekly Slack digest of them is
`lib.recommendation_digest`).

`recommend` takes the window's evidence (`lib.repricing.day_evidence` of each of the last
`window_days` days) and the previous day's recommendations. Monthly figures are the window's
dollars per covered day (the days of the window the ledger has calls for) times
`DAYS_PER_MONTH`, in `Decimal`, rounded half-even to nano-USD. An option is recommended when it
saves at least `min_monthly_saving_usd` a month on at least `min_calls` priced calls and, for
prompt caching, the agent's cache reads are at most `max_cache_read_share` of the large calls'
input. A recommendation is one (tenant, agent, provider, model, kind, option); its status:

- `new`: recommended today, not yesterday (or yesterday's row was applied or gone);
- `open`: recommended yesterday and still today (an open one is kept until it misses a
  threshold by more than `HYSTERESIS`, so a figure hovering at a threshold does not flap);
- `applied`: recommended yesterday, and today's usage moved to the option: of an agent making
  at least `MIN_EXPECTED_CALLS` such calls a day over the window, at most `ADOPTED_SHARE` of
  that daily average is left on the old model, tier or size today while some calls are on the
  new one; for caching, today's cache reads reach 80 % of the assumed hit rate;
- `gone`: recommended yesterday, no longer today, and not applied (usage fell, prices moved).

Applied and gone rows appear on the day of the change only. Statuses follow the previous UTC
day's rows: a day rebuilt after its predecessor gives the same answer; without a predecessor
everything is new.

Confidence (`low` / `medium` / `high`) says how far the figure can be trusted, not whether the
option suits the product: high needs calls on at least 7 days (or the whole window) and 100
calls, medium 3 days and 20 calls; caching (an assumed hit rate) and prices from the tier
fallback are at most medium; more than 10 % of the option's calls excluded costs a level.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np
import pandas as pd

from cost_pipeline.lib.config import Recommendations
from cost_pipeline.lib.repricing import (
    CACHING,
    DEFERRAL,
    GROUP,
    KEY,
    SUBSTITUTION,
    SUMS,
    catalog_id,
)
from cost_pipeline.lib.usage_shapes import context_window

STATUSES = ("new", "open", "applied", "gone")
ACTIVE = ("new", "open")
CONFIDENCE = ("low", "medium", "high")
DAYS_PER_MONTH = Decimal("30.4375")  # 365.25 / 12
ADOPTED_SHARE = 0.1
# A move is told only for usage of at least this many calls a day (a quiet day is no move).
MIN_EXPECTED_CALLS = 30
# An open recommendation stays open until it misses a threshold by more than this share.
HYSTERESIS = 0.2
# Caching counts as applied once a day's cache reads reach this share of the assumed hit rate.
ADOPTED_HIT_RATE = 0.8
NANO = Decimal("1e-9")
# The figures of a recommendation, kept as they were when it is carried over.
_FIGURE_COLUMNS = (
    "current_monthly_usd",
    "projected_monthly_usd",
    "saving_monthly_usd",
    "saving_pct",
    "confidence",
    "assumptions",
    "evidence_calls",
    "evidence_days",
    "unpriced_calls",
    "unfit_calls",
)
ROW_COLUMNS = ["day", *KEY, "status", "since_day", *_FIGURE_COLUMNS, "window_start", "covered_days"]
_NONE = "\x00none"  # stands for a null key part (an agent-less call) when keys are compared


def monthly(window_usd: float | Decimal, covered_days: int) -> Decimal:
    """USD a month from the window's dollars over `covered_days` days."""
    amount = Decimal(str(window_usd)) * DAYS_PER_MONTH / Decimal(max(covered_days, 1))
    return amount.quantize(NANO, rounding=ROUND_HALF_EVEN)


def window_days(day: date, settings: Recommendations) -> list[date]:
    """The days of `day`'s window, oldest first."""
    return [day - timedelta(days=i) for i in range(settings.window_days - 1, -1, -1)]


def covered_days(day: date, days_with_calls: set[date], settings: Recommendations) -> int:
    """Days of the window from the first one with calls through `day` (at least 1)."""
    inside = [d for d in window_days(day, settings) if d in days_with_calls]
    return (day - min(inside)).days + 1 if inside else settings.window_days


def _keyed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`frame` with null key parts replaced by a sentinel, so keys compare and index."""
    out = frame.copy()
    for c in columns:
        out[c] = out[c].astype(object).where(out[c].notna(), _NONE)
    return out


def _unkeyed(value: Any) -> Any:
    return None if value == _NONE else value


def recommend(
    evidence: pd.DataFrame,
    usage_today: pd.DataFrame,
    previous: pd.DataFrame,
    *,
    day: date,
    covered: int,
    settings: Recommendations,
) -> pd.DataFrame:
    """The recommendations of `day` (`ROW_COLUMNS`), largest saving first.

    `evidence`: the window's evidence rows (with `day`); `usage_today`: `day`'s calls per
    tenant, agent, provider and model; `previous`: the rows of the day before (any columns of
    `ROW_COLUMNS`, possibly empty); `covered`: days the monthly figures are scaled from.

    Thresholds and moves are told for every option at once (column arithmetic on the window's
    sums); only the rows kept are then written out one by one.
    """
    ev = _keyed(evidence, KEY)
    window = ev.groupby(KEY, sort=False)[SUMS].sum()
    window["evidence_days"] = ev[ev["calls"] > 0].groupby(KEY, sort=False)["day"].nunique()
    window["evidence_days"] = window["evidence_days"].fillna(0).astype(int)
    today = ev[ev["day"] == day].groupby(KEY, sort=False)[SUMS].sum()
    used = _keyed(usage_today, GROUP)
    prev = _keyed(previous, KEY).set_index(KEY) if len(previous) else None

    keys = list(window.index)
    # Each option's sums as one row of floats, as `window.loc[key]` would give them.
    sums = window.to_numpy(dtype=np.float64)
    col = {c: sums[:, i] for i, c in enumerate(window.columns)}
    kinds = np.array([k[4] for k in keys], dtype=object)
    status_before: dict[tuple, Any] = {}
    if prev is not None:
        status_before = dict(zip(prev.index, prev["status"], strict=True))
    was_active = np.array([status_before.get(k) in ACTIVE for k in keys], dtype=bool)
    since_before: dict[tuple, Any] = {}
    if prev is not None and was_active.any():
        since_before = dict(zip(prev.index, prev["since_day"], strict=True))
    current = [monthly(v, covered) for v in col["current_usd"]]
    projected = [monthly(v, covered) for v in col["projected_usd"]]
    qualifies = _qualifying(col, kinds, current, projected, was_active, settings)
    adopted = _adoption(window.index, kinds, col, today, used, covered, settings)

    rows: list[dict[str, Any]] = []
    for i in np.flatnonzero(was_active | (qualifies & ~adopted)):
        key = keys[i]
        if was_active[i]:
            status = "applied" if adopted[i] else ("open" if qualifies[i] else "gone")
            since = since_before[key]
        else:
            status, since = "new", day
        values = dict(zip(window.columns, sums[i], strict=True))
        figures = _figures(key, values, current[i], projected[i], settings)
        rows.append(_row(day, key, status, since, figures, covered))
    if prev is not None:
        # Yesterday's new or open ones without evidence left: gone, with yesterday's figures.
        active = prev[prev["status"].isin(ACTIVE)]
        for key in active.index:
            if key not in window.index:
                before = prev.loc[key]
                figures = {c: before[c] for c in _FIGURE_COLUMNS}
                rows.append(_row(day, key, "gone", before["since_day"], figures, covered))
    out = pd.DataFrame(rows, columns=ROW_COLUMNS)
    return out.sort_values(
        ["saving_monthly_usd", "tenant_id"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)


def _row(
    day: date, key: tuple, status: str, since: Any, figures: dict[str, Any], covered: int
) -> dict[str, Any]:
    return {
        "day": day,
        **{c: _unkeyed(v) for c, v in zip(KEY, key, strict=True)},
        "status": status,
        "since_day": since,
        **figures,
        "window_start": day - timedelta(days=covered - 1),
        "covered_days": covered,
    }


def _figures(
    key: tuple,
    sums: Mapping[str, Any],
    current: Decimal,
    projected: Decimal,
    settings: Recommendations,
) -> dict[str, Any]:
    saving = current - projected
    calls = int(sums["calls"])
    excluded = int(sums["unpriced_calls"]) + int(sums["unfit_calls"])
    return {
        "current_monthly_usd": float(current),
        "projected_monthly_usd": float(projected),
        "saving_monthly_usd": float(saving),
        "saving_pct": float(saving / current * 100) if current > 0 else None,
        "confidence": confidence(
            str(key[4]),
            calls=calls,
            days=int(sums["evidence_days"]),
            window=settings.window_days,
            excluded_share=excluded / (calls + excluded) if calls + excluded else 0.0,
            fallback=int(sums["fallback_calls"]) > 0,
        ),
        "assumptions": _assumptions(key, sums, settings),
        "evidence_calls": calls,
        "evidence_days": int(sums["evidence_days"]),
        "unpriced_calls": int(sums["unpriced_calls"]),
        "unfit_calls": int(sums["unfit_calls"]),
    }


def _qualifying(
    sums: dict[str, np.ndarray],
    kinds: np.ndarray,
    current: list[Decimal],
    projected: list[Decimal],
    was_active: np.ndarray,
    settings: Recommendations,
) -> np.ndarray:
    """Whether each option is worth recommending. One recommended yesterday (`was_active`) has
    each floor and ceiling loosened by `1 + HYSTERESIS` (not dropped for a hair on either
    side)."""
    slack = np.where(was_active, 1 + HYSTERESIS, 1.0)
    ok = sums["calls"] * slack >= settings.min_calls
    for i in np.flatnonzero(ok):
        # The saving as stored (a float), loosened in Decimal.
        saving = Decimal(str(float(current[i] - projected[i])))
        ok[i] = saving * Decimal(str(1 + HYSTERESIS if was_active[i] else 1)) >= (
            settings.min_monthly_saving_usd
        )
    caching = kinds == CACHING
    if caching.any():
        ok[caching] &= _share(sums["cache_read_tokens"], sums["input_tokens"], 1.0)[caching] <= (
            settings.caching.max_cache_read_share * slack[caching]
        )
    return ok


def _share(part: np.ndarray, whole: np.ndarray, empty: float) -> np.ndarray:
    """`part / whole`, `empty` where `whole` is 0."""
    out = np.full(len(whole), empty)
    np.divide(part, whole, out=out, where=whole != 0)
    return out


def _adoption(
    index: pd.MultiIndex,
    kinds: np.ndarray,
    sums: dict[str, np.ndarray],
    today: pd.DataFrame,
    used: pd.DataFrame,
    covered: int,
    settings: Recommendations,
) -> np.ndarray:
    """Whether each option's usage moved to it on the day (see the module doc): compared with
    the window's daily average of the calls the option applies to (excluded ones too)."""
    expected = (sums["calls"] + sums["unpriced_calls"] + sums["unfit_calls"]) / max(covered, 1)
    # Too few calls a day to tell a move from a quiet day.
    enough = expected >= MIN_EXPECTED_CALLS
    adopted = np.zeros(len(index), dtype=bool)
    substitution = enough & (kinds == SUBSTITUTION)
    if substitution.any():
        adopted[substitution] = _substituted(
            list(index[substitution]), expected[substitution], used
        )
    rest = enough & ~substitution
    if not rest.any() or today.empty:
        return adopted
    # The day's sums of each option (missing: no call of it today), as floats.
    on_day = today.reindex(index)
    present = on_day["calls"].notna().to_numpy()
    day_sums = {c: on_day[c].to_numpy(dtype=np.float64) for c in SUMS}
    calls = day_sums["calls"]
    caching = rest & present & (kinds == CACHING)
    caching &= ~(calls < ADOPTED_SHARE * expected) & (day_sums["input_tokens"] != 0)
    share = _share(day_sums["cache_read_tokens"], day_sums["input_tokens"], 0.0)
    cache = settings.caching
    adopted |= (
        caching
        & (share > cache.max_cache_read_share)
        & (share >= ADOPTED_HIT_RATE * cache.assumed_hit_rate)
    )
    other = rest & present & ~(kinds == CACHING)
    old = calls + day_sums["unpriced_calls"] + day_sums["unfit_calls"]
    adopted |= other & (day_sums["other_calls"] > 0) & (old <= ADOPTED_SHARE * expected)
    return adopted


def _substituted(keys: list[tuple], expected: np.ndarray, used: pd.DataFrame) -> np.ndarray:
    """Whether each model substitution `keys` names moved: the day has calls on the option
    (matched by catalog id) and at most `ADOPTED_SHARE` of `expected` left on the old model."""
    calls = used["calls"].to_numpy()
    where = list(zip(used["tenant_id"], used["agent_id"], used["provider"], strict=True))
    on_model: dict[tuple, int] = {}
    on_id: dict[tuple, int] = {}
    for place, model, n in zip(where, used["model"], calls, strict=True):
        on_model[(*place, model)] = on_model.get((*place, model), 0) + int(n)
        found = (*place, catalog_id(str(place[2]), str(model)))
        on_id[found] = on_id.get(found, 0) + int(n)
    out = np.zeros(len(keys), dtype=bool)
    for i, (tenant, agent, provider, model, _, option) in enumerate(keys):
        place = (tenant, agent, provider)
        old = on_model.get((*place, model), 0)
        new = on_id.get((*place, catalog_id(str(provider), str(option))), 0)
        out[i] = new > 0 and old <= ADOPTED_SHARE * expected[i]
    return out


def best_saving(rows: pd.DataFrame) -> float:
    """USD a month of the open recommendations, taking the best option of each agent and model:
    options on the same calls do not add up (a cheaper model and batch both cut those calls)."""
    active = _keyed(rows[rows["status"].isin(ACTIVE)], GROUP)
    return float(active.groupby(GROUP)["saving_monthly_usd"].max().sum()) if len(active) else 0.0


def confidence(
    kind: str, *, calls: int, days: int, window: int, excluded_share: float, fallback: bool
) -> str:
    """How far a figure can be trusted (see the module doc)."""
    if days >= min(7, window) and calls >= 100:
        level = 2
    elif days >= min(3, window) and calls >= 20:
        level = 1
    else:
        level = 0
    if kind == CACHING or fallback:
        level = min(level, 1)
    if excluded_share > 0.1:
        level -= 1
    return CONFIDENCE[max(level, 0)]


def assumptions(sums: pd.Series, settings: Recommendations) -> str:
    """What a figure assumes, in a sentence or three (`sums`: an option's window sums, named by
    its key)."""
    return _assumptions(sums.name, sums, settings)


def _assumptions(key: tuple, sums: Mapping[str, Any], settings: Recommendations) -> str:
    _, _, provider, model, kind, option = key
    unfit, unpriced = int(sums["unfit_calls"]), int(sums["unpriced_calls"])
    if kind == SUBSTITUTION:
        window = context_window(str(provider).lower(), str(option))
        text = (
            f"The same calls (tokens, tier, batch) on {option} at its list price; output quality "
            "is not assessed: try it on a sample first."
        )
        if unfit:
            limit = f"its {window:,}-token context window" if window else "it"
            text += f" {unfit:,} call(s) that do not fit {limit} are excluded."
    elif kind == CACHING:
        caching = settings.caching
        share = sums["cache_read_tokens"] / sums["input_tokens"] if sums["input_tokens"] else 0
        text = (
            f"Assumes {caching.assumed_hit_rate:.0%} of each call's input is read from the prompt "
            f"cache and {caching.assumed_write_share:.0%} written to it, at the catalog's cache "
            f"prices; calls of at least {caching.min_input_tokens:,} input tokens, of which "
            f"{share:.0%} is cached today."
        )
    elif kind == DEFERRAL:
        text = (
            f"The same calls at the {option} tier instead of the standard one"
            + (", results within 24 h" if option == "batch" else ", slower and best-effort")
            + "."
        )
        if int(sums["fallback_calls"]):
            text += (
                f" The catalog lists no {option} price for {model}: priced at the standard "
                f"price times pricing.tier_fallback_multipliers ({int(sums['fallback_calls']):,} "
                "call(s))."
            )
        if unfit:
            text += f" {unfit:,} call(s) without a {option} price are excluded."
    else:
        margin = settings.long_context_margin_pct
        text = (
            f"Calls within {margin:g} % above a long-context price threshold with their input "
            f"trimmed to {option.removeprefix('input ≤ ')} (fewer retrieved chunks or history) "
            "stay at the base price; output unchanged."
        )
    if unpriced:
        text += f" {unpriced:,} unpriced call(s) excluded, not counted as $0."
    return text
