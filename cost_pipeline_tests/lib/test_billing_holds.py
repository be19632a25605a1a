"""Protects the hold decision: what billing keeps from Stripe, and when a release covers it."""

from __future__ import annotations

import pandas as pd
import pytest

from cost_pipeline.lib.billing_ledger import ABOVE_CEILING, UNPRICED_USAGE, hold_reasons


@pytest.mark.parametrize(
    ("cents", "unpriced", "approved", "expected"),
    [
        (100, False, None, None),
        (1_000, False, None, None),  # at the ceiling: sent
        (1_001, False, None, ABOVE_CEILING),
        (100, True, None, UNPRICED_USAGE),
        (1_001, True, None, f"{ABOVE_CEILING}, {UNPRICED_USAGE}"),
        (1_001, False, 1_001, None),  # released at this total
        (1_001, True, 2_000, None),
        (2_001, False, 2_000, ABOVE_CEILING),  # grew past the released total: held again
    ],
)
def test_hold_reasons(cents: int, unpriced: bool, approved: int | None, expected: str | None):
    new = pd.DataFrame({"tenant_id": ["t"], "period": ["2026-09"], "amount_cents": [cents]})
    reasons = hold_reasons(
        new,
        ceiling_cents=1_000,
        unpriced={("t", "2026-09")} if unpriced else set(),
        approved={("t", "2026-09"): approved} if approved is not None else {},
    )
    assert reasons.iloc[0] == expected
