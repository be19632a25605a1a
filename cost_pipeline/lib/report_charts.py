"""Chart images for digests and statements: small matplotlib PNGs, drawn off-screen (Agg).

`spend_chart` draws a period's daily spend as bars, with the previous period's days (aligned by
position: Monday under Monday, the 1st under the 1st) as a line, so "up or down, and since when"
reads at a glance in Slack, an email or a statement page.
"""

from __future__ import annotations

import io
from datetime import date

import pandas as pd

from cost_pipeline.lib.display import format_amount


def spend_chart(
    daily: pd.Series,
    previous: pd.Series | None = None,
    *,
    title: str,
    currency: str = "USD",
) -> bytes:
    """A PNG of `daily` (cost per day, indexed by date, every day of the period) as bars and
    `previous` (the previous period's days, same order) as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days: list[date] = list(daily.index)
    fig, ax = plt.subplots(figsize=(7, 3), dpi=90)
    try:
        x = list(range(len(days)))
        ax.bar(x, daily.astype(float).to_numpy(), color="tab:blue", label="this period")
        if previous is not None and len(previous):
            prev = previous.astype(float).to_numpy()[: len(days)]
            ax.plot(
                x[: len(prev)], prev, color="tab:orange", marker="o", ms=3, label="previous period"
            )
        step = max(1, len(days) // 10)
        ax.set_xticks(x[::step], [f"{d:%b %d}" for d in days[::step]], fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.yaxis.set_major_formatter(lambda v, _: format_amount(v, currency))
        total = format_amount(float(daily.sum()), currency)
        ax.set_title(f"{title} — {total}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
    return buf.getvalue()
