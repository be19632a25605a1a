"""Small renderers for run metadata a person reads in the Dagster UI."""

from __future__ import annotations

import pandas as pd


def markdown_table(df: pd.DataFrame | None, *, max_rows: int = 20) -> str:
    """A markdown table (pandas + tabulate) of at most `max_rows` rows, money to the cent."""
    if df is None or df.empty:
        return "_none_"
    shown = df.head(max_rows)
    table = shown.to_markdown(index=False, floatfmt=",.2f")
    return table + (f"\n\n_{len(df) - max_rows} more rows_" if len(df) > max_rows else "")
