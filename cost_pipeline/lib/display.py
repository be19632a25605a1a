"""How reports, statements and digests show amounts: every amount goes through `format_amount`.

One small place on purpose: a per-tenant display currency (FX conversion) replaces it here
without touching the builders. Amounts are summed in `Decimal` and rounded once, half-even, to
the cent (`cents`), as DESIGN §4 asks of money that people read.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

CENT = Decimal("0.01")
NANO = Decimal("0.000000001")
SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥"}


def to_decimal(value: Any) -> Decimal:
    """A stored amount (float of a nano-rounded column, Decimal, str) as an exact Decimal at
    nano precision; a missing value is 0."""
    if isinstance(value, Decimal):
        return value.quantize(NANO, rounding=ROUND_HALF_EVEN)
    if value is None or isinstance(value, str):
        return Decimal(value or 0).quantize(NANO, rounding=ROUND_HALF_EVEN)
    number = float(value)  # numpy and pandas scalars too
    if math.isnan(number):
        return Decimal(0)
    return Decimal(repr(number)).quantize(NANO, rounding=ROUND_HALF_EVEN)


def cents(value: Any) -> Decimal:
    """`value` rounded half-even to the cent."""
    return to_decimal(value).quantize(CENT, rounding=ROUND_HALF_EVEN)


def format_amount(amount: Any, currency: str = "USD") -> str:
    """`$1,234.56`, `-$3.10`, `1,234.56 CHF`; "n/a" for a missing amount."""
    if amount is None or (not isinstance(amount, Decimal | str) and math.isnan(float(amount))):
        return "n/a"
    value = cents(amount)
    sign = "-" if value < 0 else ""
    digits = f"{abs(value):,.2f}"
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{digits}" if symbol else f"{sign}{digits} {currency}"


def format_change(current: Any, previous: Any) -> str:
    """The change from `previous` to `current` in percent (`+12.5%`), or "new" / "n/a"."""
    now, before = to_decimal(current), to_decimal(previous)
    if before == 0:
        return "n/a" if now == 0 else "new"
    return f"{(now - before) / abs(before) * 100:+.1f}%"
