"""Split money into parts that sum exactly, to the nano-dollar (largest-remainder rounding).

Used to amortize a FOCUS charge over the days of its charge period and to spread an unowned
cloud charge over tenants: each whole is a count of nano-units (9 decimals), each part gets
the floor of its exact share, and the units left over go, one each, to the parts with the
largest fractional remainders. So the parts of every whole sum to it exactly and no part is
more than one nano-unit from its exact share. Amounts arrive as float64 (the warehouse's money
type), which holds 9 decimals exactly up to 15 significant digits: $999,999.999999999 a row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cost_pipeline.lib.schemas import MONEY_DECIMALS

NANO = 10**MONEY_DECIMALS


def to_nanos(amounts: pd.Series | np.ndarray) -> np.ndarray:
    """Amounts (float or decimal text already parsed) as int64 nano-units, rounded half-even."""
    return np.rint(np.asarray(amounts, dtype="float64") * NANO).astype("int64")


def from_nanos(nanos: np.ndarray) -> np.ndarray:
    """Nano-units back to float amounts, exact at 9 decimals for any realistic bill."""
    return np.asarray(nanos, dtype="int64") / NANO


def split_nanos(totals: np.ndarray, owner: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Parts of `totals[owner[i]]` proportional to `weights[i]`; each whole's parts sum exactly.

    `totals` are int64 nano-units (any sign), `owner` maps each part to its whole, `weights` are
    non-negative with a positive sum per whole. Returns the int64 parts, in the order given.
    """
    totals = np.asarray(totals, dtype="int64")
    owner = np.asarray(owner, dtype="int64")
    weights = np.asarray(weights, dtype="float64")
    if len(owner) == 0:
        return np.zeros(0, dtype="int64")
    weight_sum = np.bincount(owner, weights=weights, minlength=len(totals))
    share = weights / weight_sum[owner]
    # Python ints would be exact; float is within a fraction of a unit, and the remainder
    # step below restores exact sums whatever the float error.
    exact = totals[owner].astype("float64") * share
    floor = np.floor(exact)
    parts = floor.astype("int64")
    frac = exact - floor
    assigned = np.zeros(len(totals), dtype="int64")
    np.add.at(assigned, owner, parts)
    residue = totals - assigned
    # Rank each whole's parts by fractional remainder, largest first (stable on ties).
    order = np.lexsort((-frac, owner))
    rank = np.empty(len(owner), dtype="int64")
    starts = np.searchsorted(owner[order], owner[order], side="left")
    rank[order] = np.arange(len(owner)) - starts
    count = np.bincount(owner, minlength=len(totals))
    r = residue[owner]
    up = (r > 0) & (rank < r)
    down = (r < 0) & (rank >= count[owner] + r)
    return parts + up.astype("int64") - down.astype("int64")
