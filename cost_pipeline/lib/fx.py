"""Exchange rates, dated, and conversion of amounts billed in other currencies (pure).

Rates are the European Central Bank's daily euro reference rates (units of a currency per euro,
published on TARGET business days), read from the ECB's XML (`parse_ecb_xml`), plus an
effective-dated fallback table from the configuration (`fx.rates`, units per US dollar). A
charge is converted at the rate of its charge date: the latest ECB publication on or before
that date, at most `MAX_RATE_AGE_DAYS` old (weekends and holidays have none); the configured
table is used only where the ECB has no rate. No rate, no conversion: the amount stays in its
currency and is reported, never guessed.

Cross rates go through the euro: USD per unit of X = (USD per EUR) / (X per EUR).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import numpy as np
import pandas as pd

from cost_pipeline.lib.config import CostConfig

USD, EUR = "USD", "EUR"
MAX_RATE_AGE_DAYS = 7
RATE_COLUMNS = ["day", "currency", "per_eur", "source"]


def parse_ecb_xml(text: str | bytes) -> pd.DataFrame:
    """The rates of an ECB euro reference rate file (daily, 90-day or full history)."""
    root = ET.fromstring(text)
    rows = []
    for cube in root.iter():
        when = cube.attrib.get("time")
        if when is None or not cube.tag.endswith("Cube"):
            continue
        day = date.fromisoformat(when)
        for rate in cube:
            currency, value = rate.attrib.get("currency"), rate.attrib.get("rate")
            if currency and value:
                rows.append((day, currency.upper(), float(value), "ecb"))
    if not rows:
        raise ValueError("no <Cube time=… currency=… rate=…> entries: not an ECB rates file")
    return pd.DataFrame(rows, columns=RATE_COLUMNS)


@dataclass(frozen=True)
class ConfiguredRate:
    """A fallback rate from the configuration: `per_usd` units of `currency` per dollar."""

    currency: str
    effective_from: date
    per_usd: Decimal


class FxRates:
    """Dated rates from the ECB table and the configured fallbacks."""

    def __init__(self, ecb: pd.DataFrame, configured: Iterable[ConfiguredRate] = ()) -> None:
        frame = ecb[RATE_COLUMNS] if len(ecb) else pd.DataFrame(columns=RATE_COLUMNS)
        frame = frame.assign(day=pd.to_datetime(frame["day"]))
        self._ecb = frame.sort_values("day")
        self._configured = sorted(configured, key=lambda r: r.effective_from)

    def usd_per_unit(self, currencies: pd.Series, days: pd.Series) -> pd.DataFrame:
        """For each (currency, day): `usd_per_unit` (NaN without a rate), `rate_day` and
        `rate_source` (ecb, config, or identity for USD)."""
        when = pd.to_datetime(pd.Series(days, dtype="object").astype(str))
        want = pd.DataFrame({"currency": currencies.astype(str).str.upper().to_numpy(),
                             "day": when.to_numpy()})  # fmt: skip
        want["_i"] = np.arange(len(want))
        out = pd.DataFrame(
            {"usd_per_unit": np.nan, "rate_day": pd.NaT, "rate_source": None}, index=want["_i"]
        )
        usd = want["currency"] == USD
        out.loc[want.loc[usd, "_i"], ["usd_per_unit", "rate_source"]] = [1.0, "identity"]
        out.loc[want.loc[usd, "_i"], "rate_day"] = want.loc[usd, "day"].to_numpy()
        ecb_usd = self._ecb[self._ecb["currency"] == USD][["day", "per_eur"]]
        rest = want[~usd].sort_values("day")
        if len(rest) and len(ecb_usd):
            for currency, group in rest.groupby("currency"):
                if currency == EUR:
                    own = ecb_usd.assign(per_eur_x=1.0)
                else:
                    own = self._ecb[self._ecb["currency"] == currency][["day", "per_eur"]]
                    own = own.rename(columns={"per_eur": "per_eur_x"}).merge(ecb_usd, on="day")
                if own.empty:
                    continue
                own = own.sort_values("day").assign(rate_day=lambda f: f["day"])
                hit = pd.merge_asof(
                    group,
                    own[["day", "rate_day", "per_eur", "per_eur_x"]],
                    on="day",
                    direction="backward",
                    tolerance=pd.Timedelta(days=MAX_RATE_AGE_DAYS),
                ).dropna(subset=["rate_day"])
                out.loc[hit["_i"], "usd_per_unit"] = (hit["per_eur"] / hit["per_eur_x"]).to_numpy()
                out.loc[hit["_i"], "rate_day"] = hit["rate_day"].to_numpy()
                out.loc[hit["_i"], "rate_source"] = "ecb"
        missing = out["usd_per_unit"].isna()
        for i in out.index[missing]:
            row = want.iloc[int(i)]
            rate = self._configured_rate(str(row["currency"]), row["day"].date())
            if rate is not None:
                out.loc[i, ["usd_per_unit", "rate_source"]] = [float(1 / rate.per_usd), "config"]
                out.loc[i, "rate_day"] = pd.Timestamp(rate.effective_from)
        return out.reset_index(drop=True)

    def _configured_rate(self, currency: str, day: date) -> ConfiguredRate | None:
        found = None
        for rate in self._configured:
            if rate.currency.upper() == currency and rate.effective_from <= day:
                found = rate
        return found


AMOUNT_COLUMNS = ("billed_cost", "effective_cost", "list_cost", "contracted_cost")


def config_rates(config: CostConfig) -> list[ConfiguredRate]:
    """The configured fallback rates (`fx.rates`) of a `CostConfig`."""
    return [
        ConfiguredRate(r.currency, r.effective_from, Decimal(r.per_usd)) for r in config.fx.rates
    ]


def to_usd(rows: pd.DataFrame, fx: FxRates) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split `cloud_costs` rows billed in other currencies into (converted to USD at their
    charge day's rate, with `original_currency`, `original_effective_cost`, `usd_per_unit`,
    `rate_day` and `rate_source`; and rows without a rate, unchanged)."""
    if rows.empty:
        return rows.assign(original_currency=None, usd_per_unit=np.nan), rows
    rates = fx.usd_per_unit(rows["currency"], rows["day"])
    rates.index = rows.index
    has = rates["usd_per_unit"].notna()
    converted = rows[has].copy()
    factor = rates.loc[has, "usd_per_unit"].astype("float64")
    converted["original_currency"] = converted["currency"]
    converted["original_effective_cost"] = converted["effective_cost"]
    for column in AMOUNT_COLUMNS:
        if column in converted.columns:
            converted[column] = (converted[column].astype("float64") * factor).round(9)
    converted["currency"] = USD
    converted["needs_fx"] = False
    converted["usd_per_unit"] = factor
    converted["rate_day"] = rates.loc[has, "rate_day"]
    converted["rate_source"] = rates.loc[has, "rate_source"]
    return converted, rows[~has]


def fx_summary(converted: pd.DataFrame) -> pd.DataFrame:
    """Per original currency: rows, the amount as billed, in USD, and the rates' range."""
    columns = ["currency", "rows", "effective_cost", "effective_cost_usd", "rates", "source"]
    if converted.empty:
        return pd.DataFrame(columns=columns)
    out = converted.groupby("original_currency").agg(
        rows=("day", "size"),
        effective_cost=("original_effective_cost", "sum"),
        effective_cost_usd=("effective_cost", "sum"),
        low=("usd_per_unit", "min"),
        high=("usd_per_unit", "max"),
        source=("rate_source", lambda s: ", ".join(sorted(set(map(str, s))))),
    )
    out["rates"] = [
        f"{lo:.6f}–{hi:.6f} USD each" for lo, hi in zip(out["low"], out["high"], strict=True)
    ]
    return out.reset_index().rename(columns={"original_currency": "currency"})[columns]
