"""Per-line-item reconciliation: what each provider bills, line by line, against the ledger's own
pricing of the provider's usage (`llm_line_item_reconciliation`).

Both sides are placed on (day, provider, endpoint, model without its dated suffix, cost
component): the usage side from `provider_usage_priced` (one row per component the engine
prices: input, cached_input, cache_write, output, other), the billed side from
`provider_reported_costs` (`lib.usage_endpoints` classifies each line item). Where the bill
names no component for a model (`"text-embedding-3-small"`), or the endpoint's unit has no
ledger price, both sides are compared at the model's whole cost instead.

Each row says what it is (`status`): `priced` (both sides), `no_ledger_price` (images,
characters, seconds, bytes, sessions: the ledger has no price for the unit, so the row is
reconciled against the provider-reported cost, and `note` says so), `usage_only`,
`reported_only`, `unknown_endpoint` (a line item no rule places, or usage of an endpoint the
pipeline does not know) and `unknown_unit` (usage with counters the normalizer does not know).
A `total` row per endpoint carries its coverage: the share of the endpoint's billed cost that
the ledger's own priced usage explains. Nothing is dropped: every usage row and every billed
line item ends up in exactly one row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cost_pipeline.catalog import LLM_LINE_ITEM_RECONCILIATION
from cost_pipeline.lib.provider_usage import canonical_model
from cost_pipeline.lib.usage_endpoints import (
    ANTHROPIC,
    COMPONENT_COSTS,
    ENDPOINTS,
    OPENAI,
    endpoint,
    is_ledger_priced,
)

# A line item's gap is worth a warning when it is at least this share of the provider's day
# (and at least a cent: providers round line items to the cent).
MATERIAL_SHARE_PCT = 0.5
MATERIAL_FLOOR_USD = 0.01
_KEYS = ["day", "provider", "endpoint", "model"]
_NONE = "__null__"  # merge sentinel for null keys
_LEGACY_ENDPOINT = {OPENAI: "completions", ANTHROPIC: "messages"}


def _num(df: pd.DataFrame, name: str) -> pd.Series:
    if name not in df.columns:
        return pd.Series(0.0, index=df.index)
    column = df[name]
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        return pd.Series(np.where(np.isnan(values), 0.0, values), index=df.index)
    return pd.to_numeric(column, errors="coerce").fillna(0.0).astype(float)


def _text(df: pd.DataFrame, name: str) -> pd.Series:
    if name not in df.columns:
        return pd.Series(None, index=df.index, dtype="object")
    values = df[name].astype("object")
    return values.where(values.notna(), None)


def _dates(days: pd.Series) -> pd.Series:
    """`pd.to_datetime(days).dt.date`, converted once per distinct day (a frame holds a few)."""
    codes, distinct = pd.factorize(days, use_na_sentinel=False)
    dates = pd.to_datetime(pd.Series(distinct, dtype=days.dtype)).dt.date.to_numpy(dtype=object)
    return pd.Series(dates.take(codes), index=days.index, dtype="object")


def _endpoints(df: pd.DataFrame) -> pd.Series:
    """The row's endpoint; rows stored before endpoints existed are completions or messages."""
    names = _text(df, "endpoint")
    legacy = df["provider"].map(_LEGACY_ENDPOINT)
    return names.where(names.notna(), legacy).astype("object")


_SUMMED = (
    "requests",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "web_search_requests",
    "input_audio_tokens",
    "output_audio_tokens",
    *COMPONENT_COSTS.values(),
    *{e.column for e in ENDPOINTS.values() if e.column},
)


def _usage_side(usage: pd.DataFrame) -> pd.DataFrame:
    """The usage per day, provider, endpoint and model: one row per cost component the engine
    prices (token endpoints), or one row with the native quantity (other endpoints)."""
    columns = [*_KEYS, "cost_component", "quantity", "requests", "ledger_cost_usd", "note", "odd"]
    if usage.empty:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(
        {
            "day": _dates(usage["day"]),
            "provider": usage["provider"].astype(str),
            "endpoint": _endpoints(usage),
            "model": canonical_model(_text(usage, "model")),
            "note": _text(usage, "unrecognized"),
            **{c: _num(usage, c) for c in _SUMMED},
        }
    )
    frame["odd"] = frame["note"].notna()
    frame = _keyed(frame, _KEYS)
    grouped = frame.groupby(_KEYS, sort=False)
    base = grouped[list(_SUMMED)].sum()
    base["note"] = _joined(grouped.ngroup().to_numpy(), frame["note"], len(base))
    base["odd"] = grouped["odd"].max()
    base = base.reset_index()
    for c in _KEYS:
        base[c] = _unkeyed(base[c])
    audio = base["input_audio_tokens"] + base["output_audio_tokens"]
    audio_note = "no ledger price for unit audio tokens (" + audio.map("{:.0f}".format) + ")"
    notes = base["note"]
    base["note"] = notes.where(
        audio.eq(0), audio_note.where(notes.isna(), notes + "; " + audio_note)
    )
    priced = is_ledger_priced(base["provider"], base["endpoint"])
    writes = base["cache_write_tokens"] + base["cache_write_1h_tokens"]
    tokens = {
        "input": base["input_tokens"] - base["cache_read_tokens"] - writes,
        "cached_input": base["cache_read_tokens"],
        "cache_write": writes,
        "output": base["output_tokens"],
        "other": base["web_search_requests"],
    }
    # The line items of each component, then those of other units, as column arrays.
    parts: list[dict[str, np.ndarray]] = []
    ledger = base.loc[priced]
    for component, cost_column in COMPONENT_COSTS.items():
        quantity = tokens[component].loc[priced].to_numpy()
        cost = ledger[cost_column].to_numpy()
        if component == "input":
            rows = np.arange(len(ledger))
            note, odd = ledger["note"].to_numpy(), ledger["odd"].to_numpy()
        else:
            # What the model's usage says beyond tokens is told once, on its input row; a
            # component without usage or cost is no line item.
            rows = np.flatnonzero((quantity != 0) | (cost != 0))
            note = np.full(len(ledger), None, dtype=object)
            odd = np.zeros(len(ledger), dtype=bool)
        parts.append(
            {
                **{c: ledger[c].to_numpy().take(rows) for c in (*_KEYS, "requests")},
                "cost_component": np.full(len(rows), component, dtype=object),
                "quantity": quantity.take(rows),
                "ledger_cost_usd": cost.take(rows),
                "note": note.take(rows),
                "odd": odd.take(rows),
            }
        )
    units = base.loc[~priced]
    quantity = pd.Series(np.nan, index=units.index)
    present = set(zip(units["provider"].tolist(), units["endpoint"].tolist(), strict=True))
    for (provider, name), spec in ENDPOINTS.items():
        if spec.column is not None and (provider, name) in present:
            hit = units["provider"].eq(provider) & units["endpoint"].eq(name)
            quantity = quantity.where(~hit, units[spec.column])
    parts.append(
        {
            **{c: units[c].to_numpy() for c in (*_KEYS, "requests", "note", "odd")},
            "cost_component": np.full(len(units), None, dtype=object),
            "quantity": quantity.to_numpy(),
            "ledger_cost_usd": np.full(len(units), np.nan),
        }
    )
    return pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in columns})


def _reported_side(reported: pd.DataFrame) -> pd.DataFrame:
    columns = [*_KEYS, "cost_component", "line_item", "provider_reported_cost_usd"]
    if reported.empty:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(
        {
            "day": _dates(reported["day"]),
            "provider": reported["provider"].astype(str),
            "endpoint": _text(reported, "endpoint"),
            "model": canonical_model(_text(reported, "model")),
            "cost_component": _text(reported, "cost_component"),
            "line_item": _text(reported, "line_item"),
            "provider_reported_cost_usd": _num(reported, "amount_usd"),
        }
    )[columns]


def _keyed(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = df.copy()
    for c in columns:
        values = out[c].to_numpy(dtype=object, copy=True)
        values[pd.isna(values)] = _NONE
        out[c] = values
    return out


def _unkeyed(values: pd.Series) -> np.ndarray:
    """A key column with the null sentinel back to None."""
    out = values.to_numpy(dtype=object, copy=True)
    out[out == _NONE] = None
    return out


def _collapse(frame: pd.DataFrame, whole: pd.MultiIndex) -> pd.DataFrame:
    """`frame` with the components of the (day, provider, endpoint, model) keys in `whole`
    merged into one whole-model row key."""
    out = frame.reset_index(drop=True)
    hit = pd.MultiIndex.from_frame(out[_KEYS]).isin(whole)
    out["cost_component"] = out["cost_component"].where(~hit, _NONE)
    return out


def _joined(codes: np.ndarray, values: pd.Series, groups: int) -> list[str | None]:
    """Per group (`codes` numbers each row's group 0..groups-1): its distinct non-empty texts,
    sorted and joined with "; ", or None."""
    texts: list[set[str]] = [set() for _ in range(groups)]
    for code, value in zip(codes.tolist(), values.tolist(), strict=True):
        if isinstance(value, str) and value:
            texts[code].add(value)
    return ["; ".join(sorted(t)) or None for t in texts]


def _sums(codes: np.ndarray, values: pd.Series, groups: int) -> np.ndarray:
    """Per group: `Series.sum(min_count=1)` of its values in row order (nulls count as 0; null
    when the group has no value), summed by the same numpy reduction."""
    order = np.argsort(codes, kind="stable")
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan).take(order)
    missing = np.isnan(numbers)
    filled = np.where(missing, 0.0, numbers)
    starts = np.searchsorted(codes.take(order), np.arange(groups + 1))
    out = np.full(groups, np.nan)
    for g, (start, end) in enumerate(zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True)):
        if end > start and not missing[start:end].all():
            out[g] = filled[start:end].sum()
    return out


def reconcile_line_items(usage_priced: pd.DataFrame, reported: pd.DataFrame) -> pd.DataFrame:
    """`llm_line_item_reconciliation` rows of `provider_usage_priced` and
    `provider_reported_costs` rows (any days): line items, then one total per endpoint."""
    use, bill = _usage_side(usage_priced), _reported_side(reported)
    if use.empty and bill.empty:
        return LLM_LINE_ITEM_RECONCILIATION.empty_frame()
    keys = [*_KEYS, "cost_component"]
    use, bill = _keyed(use, keys), _keyed(bill, keys)
    # Compare a model's whole cost where the bill names no component or the unit has no price.
    whole = pd.MultiIndex.from_frame(
        pd.concat(
            [
                bill.loc[bill["cost_component"] == _NONE, _KEYS],
                use.loc[use["cost_component"] == _NONE, _KEYS],
            ]
        )
    )
    use, bill = _collapse(use, whole), _collapse(bill, whole)
    grouped = use.groupby(keys, sort=False)
    codes, groups = grouped.ngroup().to_numpy(), grouped.ngroups
    maxima = grouped[["requests", "odd"]].max()
    use = pd.DataFrame(
        {
            "quantity": _sums(codes, use["quantity"], groups),
            "requests": maxima["requests"],  # the model's requests, on each of its components
            "ledger_cost_usd": _sums(codes, use["ledger_cost_usd"], groups),
            "note": _joined(codes, use["note"], groups),
            "odd": maxima["odd"],
        },
        index=maxima.index,
    )
    grouped = bill.groupby(keys, sort=False)
    billed = grouped["provider_reported_cost_usd"].sum()
    bill = pd.DataFrame(
        {
            "line_item": _joined(grouped.ngroup().to_numpy(), bill["line_item"], len(billed)),
            "provider_reported_cost_usd": billed,
        },
        index=billed.index,
    )
    items = use.join(bill, how="outer").reset_index()
    for c in keys:
        items[c] = _unkeyed(items[c])
    items["_used"] = items["requests"].notna() | items["quantity"].notna()
    items["odd"] = items["odd"].astype("boolean").fillna(False).astype(bool)
    items = _judge(items)
    totals = _endpoint_totals(items)
    out = pd.concat([totals, items], ignore_index=True)
    out["tenant_id"] = None
    out["usage_quantity"] = out["quantity"]
    out["_line"] = out["status"].ne("total")
    out = out.sort_values(
        ["day", "provider", "endpoint", "_line", "model", "cost_component"],
        na_position="first",
        kind="stable",
    )
    return LLM_LINE_ITEM_RECONCILIATION.conform(out)


def _judge(items: pd.DataFrame) -> pd.DataFrame:
    """Each line item's unit, status, note and drift."""
    spec = [endpoint(p, e) for p, e in zip(items["provider"], items["endpoint"], strict=True)]
    items["unit"] = [s.unit if s is not None else None for s in spec]
    known = pd.Series([s is not None for s in spec], index=items.index)
    priced = pd.Series([s is not None and s.ledger_priced for s in spec], index=items.index)
    items.loc[priced & items["cost_component"].eq("other"), "unit"] = "web searches"
    # Numbers even when one side had no rows (its outer-joined column is then all None).
    for c in ("ledger_cost_usd", "provider_reported_cost_usd"):
        items[c] = items[c].astype("float64")
    ledger, billed = items["ledger_cost_usd"], items["provider_reported_cost_usd"]
    status = np.select(
        [
            ~known,
            items["odd"],
            ~priced,
            billed.isna(),
            ~items["_used"],
        ],
        ["unknown_endpoint", "unknown_unit", "no_ledger_price", "usage_only", "reported_only"],
        default="priced",
    )
    items["status"] = status
    unit = items["unit"].fillna("?").astype(str)
    words = pd.Series(
        np.select(
            [
                items["status"].eq("unknown_endpoint") & ~items["_used"],
                items["status"].eq("unknown_endpoint"),
                items["status"].eq("no_ledger_price") & billed.isna(),
                items["status"].eq("no_ledger_price"),
                items["status"].eq("usage_only"),
                items["status"].eq("reported_only"),
            ],
            [
                "billed line item placed on no known usage endpoint",
                "usage of an endpoint the pipeline does not know",
                "no ledger price for unit " + unit + "; nothing reported to compare with",
                "no ledger price for unit "
                + unit
                + ": reconciled against the provider-reported cost",
                "priced usage the provider reports no cost for",
                "billed without usage pulled for it",
            ],
            default="",
        ),
        index=items.index,
    )
    note = items["note"]
    items["note"] = words.where(note.isna(), (words + "; " + note.fillna("")).str.lstrip("; "))
    items["note"] = items["note"].where(items["note"].ne(""), None)
    both = ledger.notna() & billed.notna() & ledger.gt(0)
    items["drift_pct"] = ((billed - ledger) / ledger.where(both) * 100).round(4)
    items["coverage_pct"] = np.nan
    return items.drop(columns=["_used", "odd"])


def _endpoint_totals(items: pd.DataFrame) -> pd.DataFrame:
    """One `total` row per day, provider and endpoint, with the endpoint's coverage."""
    frame = items.assign(
        endpoint=items["endpoint"].fillna(_NONE),
        explained=np.minimum(
            items["ledger_cost_usd"].fillna(0.0), items["provider_reported_cost_usd"].fillna(0.0)
        ).clip(lower=0),
        native=items["quantity"].where(items["cost_component"].ne("other"), 0.0),
    )
    grouped = frame.groupby(["day", "provider", "endpoint"], sort=True)
    codes, groups = grouped.ngroup().to_numpy(), grouped.ngroups
    explained = grouped["explained"].sum()
    totals = pd.DataFrame(
        {
            "ledger_cost_usd": _sums(codes, frame["ledger_cost_usd"], groups),
            "provider_reported_cost_usd": _sums(codes, frame["provider_reported_cost_usd"], groups),
            "explained": explained,
            "quantity": _sums(codes, frame["native"], groups),
            "unit": grouped["unit"].first(),
            "lines": grouped.size(),
        },
        index=explained.index,
    ).reset_index()
    per_model = frame.drop_duplicates(["day", "provider", "endpoint", "model"])
    requests = per_model.groupby(["day", "provider", "endpoint"])["requests"].sum(min_count=1)
    # Every (day, provider, endpoint) has a first model row: the same groups, in the same order.
    totals["requests"] = requests.to_numpy()
    totals["endpoint"] = totals["endpoint"].where(totals["endpoint"] != _NONE, None)
    billed, ledger = totals["provider_reported_cost_usd"], totals["ledger_cost_usd"]
    totals["coverage_pct"] = (totals["explained"] / billed.where(billed > 0) * 100).round(4)
    totals["drift_pct"] = ((billed - ledger) / ledger.where(ledger > 0) * 100).round(4)
    totals["status"] = "total"
    totals["model"] = None
    totals["cost_component"] = None
    totals["line_item"] = None
    unit = totals["unit"].fillna("?").astype(str)
    totals["note"] = totals["lines"].astype(str) + " line item(s)"
    no_price = ledger.isna() & totals["endpoint"].notna()
    totals.loc[no_price, "note"] += (
        "; no ledger price for unit " + unit + ": reconciled against the provider-reported cost"
    )[no_price]
    return totals.drop(columns=["explained", "lines"])


@dataclass(frozen=True)
class LineItemFinding:
    """One line item worth saying something about: `level` is warn or info."""

    day: object
    provider: str
    endpoint: str | None
    label: str
    level: str
    message: str


def _label(row: Mapping[str, Any]) -> str:
    if isinstance(row["line_item"], str):
        return row["line_item"]
    if row["model"] is not None and row["cost_component"] is not None:
        return f"{row['model']}, {row['cost_component']}"
    return row["model"] or row["endpoint"] or "(unplaced)"


def _money(value: object) -> str:
    return "-" if value is None or pd.isna(value) else f"${float(value):,.4f}"


def line_item_findings(recon: pd.DataFrame, *, warn_pct: float) -> list[LineItemFinding]:
    """What the line items say: a WARN per line item that does not reconcile (its gap is
    material and beyond `warn_pct`, it is on one side only, or its endpoint or unit is unknown),
    an INFO per line item the ledger cannot price (no ledger price for its unit)."""
    if recon.empty:
        return []
    rows = recon.loc[recon["status"] != "total"]
    day_total = rows.groupby(["day", "provider"])["provider_reported_cost_usd"].sum(min_count=1)
    findings: list[LineItemFinding] = []
    for row in rows.to_dict("records"):
        billed = row["provider_reported_cost_usd"]
        ledger = row["ledger_cost_usd"]
        total = day_total.get((row["day"], row["provider"]))
        floor = max(MATERIAL_FLOOR_USD, MATERIAL_SHARE_PCT / 100 * float(total or 0.0))
        gap = (0.0 if pd.isna(billed) else float(billed)) - (
            0.0 if pd.isna(ledger) else float(ledger)
        )
        status, drift = row["status"], row["drift_pct"]
        warn = status in ("unknown_endpoint", "unknown_unit") or (
            abs(gap) >= floor
            and (
                status in ("usage_only", "reported_only")
                or (status == "priced" and (pd.isna(drift) or abs(float(drift)) > warn_pct))
            )
        )
        if not warn and status != "no_ledger_price":
            continue
        label = _label(row)
        drift_text = "" if pd.isna(drift) else f", {float(drift):+.1f}%"
        message = (
            f"{row['provider']} {row['endpoint'] or '(no endpoint)'} {label!r}: reported "
            f"{_money(billed)} vs ledger {_money(ledger)}{drift_text}"
            + (f" ({row['note']})" if row["note"] else f" [{status}]")
        )
        level = "warn" if warn else "info"
        findings.append(
            LineItemFinding(row["day"], row["provider"], row["endpoint"], label, level, message)
        )
    return findings
