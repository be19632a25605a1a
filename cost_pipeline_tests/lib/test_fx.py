"""Protects exchange rates: the ECB file, the charge day's rate (weekends take the last
publication, never one older than a week), cross rates through the euro, the configured
fallback, and conversion that keeps the original amount."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pandas as pd
import pytest

from cost_pipeline.lib.fx import ConfiguredRate, FxRates, parse_ecb_xml, to_usd

ECB = """<?xml version="1.0" encoding="UTF-8"?>
<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01"
 xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">
 <gesmes:subject>Reference rates</gesmes:subject>
 <Cube>
  <Cube time="2026-09-04">
   <Cube currency="USD" rate="1.1000"/><Cube currency="GBP" rate="0.8800"/>
  </Cube>
  <Cube time="2026-09-03">
   <Cube currency="USD" rate="1.0500"/><Cube currency="GBP" rate="0.8400"/>
  </Cube>
 </Cube>
</gesmes:Envelope>"""


def rates(*configured: ConfiguredRate) -> FxRates:
    return FxRates(parse_ecb_xml(ECB), configured)


def test_the_ecb_file_is_read_by_day_and_currency() -> None:
    frame = parse_ecb_xml(ECB)
    assert len(frame) == 4 and set(frame["currency"]) == {"USD", "GBP"}
    with pytest.raises(ValueError, match="not an ECB rates file"):
        parse_ecb_xml("<a><b/></a>")


def test_a_charge_takes_its_days_rate_or_the_last_one_within_a_week() -> None:
    days = pd.Series(["2026-09-03", "2026-09-04", "2026-09-06", "2026-09-12", "2026-09-02"])
    out = rates().usd_per_unit(pd.Series(["EUR"] * 5), days)
    # Sep 6 is a Sunday: Friday's rate. Sep 12 is 8 days after the last publication: none.
    assert out["usd_per_unit"].tolist()[:3] == [1.05, 1.10, 1.10]
    assert out["usd_per_unit"].isna().tolist()[3:] == [True, True]
    gbp = rates().usd_per_unit(pd.Series(["GBP"]), pd.Series(["2026-09-04"]))
    assert gbp.loc[0, "usd_per_unit"] == pytest.approx(1.10 / 0.88)  # through the euro
    usd = rates().usd_per_unit(pd.Series(["USD"]), pd.Series(["2030-01-01"]))
    assert usd.loc[0, "usd_per_unit"] == 1.0 and usd.loc[0, "rate_source"] == "identity"


def test_the_configured_table_fills_only_where_the_ecb_has_nothing() -> None:
    table = rates(ConfiguredRate("EUR", date(2026, 9, 10), Decimal("0.80")))
    out = table.usd_per_unit(pd.Series(["EUR", "EUR"]), pd.Series(["2026-09-04", "2026-09-12"]))
    assert out["rate_source"].tolist() == ["ecb", "config"]
    assert out["usd_per_unit"].tolist() == pytest.approx([1.10, 1.25])


def test_conversion_keeps_the_original_and_leaves_rows_without_a_rate() -> None:
    rows = pd.DataFrame(
        {
            "day": [date(2026, 9, 3), date(2026, 9, 20)],
            "currency": ["EUR", "EUR"],
            "billed_cost": [2.0, 3.0],
            "effective_cost": [1.5, 3.0],
            "list_cost": [2.5, 3.5],
            "needs_fx": [True, True],
        }
    )
    converted, waiting = to_usd(rows, rates())
    assert converted["effective_cost"].tolist() == [pytest.approx(1.575)]
    assert converted["original_effective_cost"].tolist() == [1.5]
    assert converted["original_currency"].tolist() == ["EUR"]
    assert converted["currency"].tolist() == ["USD"] and not converted["needs_fx"].any()
    assert waiting["day"].tolist() == [date(2026, 9, 20)]
