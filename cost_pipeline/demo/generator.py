"""The demo company: a synthetic, seed-deterministic log of LLM calls for the configured tenants.

`DemoCompany.events_for_day` draws one UTC day of calls from its own random stream
(`(seed, day)`), so any day can be regenerated alone and equals that day in a full run. Tenants
get a share of the traffic from their tier (Free a few USD a month, Enterprise thousands at the
default 6,000 events a day), calls follow each tenant's local working hours, weekdays and slow
growth; agents run workflows of chained calls on OpenAI, Anthropic and a self-hosted model, with
prompt caching, batch and service tiers. Incidents (runaway agent loops, model switches, tenant
spikes) are placed by the seed on a fixed 10-day grid and labelled in `incidents()`.
`write_log` writes the landing files (see `demo.log_writer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cost_pipeline.catalog import LLM_INTERACTIONS
from cost_pipeline.catalog.ledger import CALL_UNITS
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.usage_shapes import context_window

if TYPE_CHECKING:
    from cost_pipeline.demo.log_writer import WriteSummary

DAY_MS = 86_400_000
INCIDENT_BLOCK_DAYS = 10
# USD per month per tenant at the default volume, drawn in these ranges. The demo tiers'
# included usage and Free cap are sized against the draws of the default seed, so that one Free
# tenant reaches its cap and a few paying tenants owe overage (see demo_config.yaml).
TIER_MONTHLY_USD = {"free": (1.0, 5.0), "basic": (22.0, 50.0), "pro": (160.0, 340.0)}
TIER_MONTHLY_USD["enterprise"] = (1700.0, 3200.0)
TIER_USERS = {"free": 3, "basic": 12, "pro": 40, "enterprise": 150}
# Mean USD of one call across the agent and model mix below, measured with genai-prices on a
# large sample (see test_demo_generator); it turns the tier targets into traffic shares.
MEAN_CALL_USD = 0.021
DEFAULT_EVENTS_PER_DAY = 6000
WEEKDAY_FACTOR = np.array([1.2, 1.2, 1.2, 1.2, 1.2, 0.5, 0.5])  # Mon..Sun, mean 1
MONTHLY_GROWTH = 0.06
GROWTH_ANCHOR = date(2026, 10, 1)

MODELS: tuple[tuple[str, str], ...] = (
    ("openai", "gpt-4o-mini-2024-07-18"),
    ("openai", "gpt-4.1"),
    ("openai", "gpt-4.1-mini"),
    ("openai", "gpt-5-mini"),
    ("openai", "gpt-5"),
    ("openai", "o4-mini"),
    ("anthropic", "claude-sonnet-4-5-20250929"),
    ("anthropic", "claude-haiku-4-5"),
    ("anthropic", "claude-opus-4-1"),
    ("selfhosted", "support-llama-ft"),
)
MODEL_INDEX = {model: i for i, (_, model) in enumerate(MODELS)}
PROVIDER = np.array([p for p, _ in MODELS], dtype=object)
MODEL = np.array([m for _, m in MODELS], dtype=object)
IS_OPENAI = PROVIDER == "openai"
IS_ANTHROPIC = PROVIDER == "anthropic"
REASONS = np.isin(MODEL, ["gpt-5-mini", "gpt-5", "o4-mini"])
HAS_FLEX = REASONS  # genai-prices prices OpenAI's flex tier for these only
HAS_BATCH = ~np.isin(MODEL, ["claude-opus-4-1", "support-llama-ft"])
# Each model's hard context window (offline catalog; unlimited where it lists none): a real app
# cannot send more, so neither does the demo company.
CONTEXT_WINDOW = np.array([context_window(p, m) or 2**40 for p, m in MODELS], dtype=np.int64)
LONG_CONTEXT = MODEL_INDEX["claude-sonnet-4-5-20250929"]
# A pricier sibling with the same tiers, batch and long-context behaviour, and its price ratio.
SWITCHES = {
    "gpt-4.1-mini": ("gpt-4.1", 5.0),
    "claude-haiku-4-5": ("claude-sonnet-4-5-20250929", 3.0),
    "gpt-5-mini": ("gpt-5", 5.0),
}


@dataclass(frozen=True)
class Agent:
    name: str
    share: float  # of a tenant's calls, before the tenant's own variation
    models: dict[str, float]
    input_median: float
    output_median: float
    workflow_size: float  # mean calls per workflow
    batch_share: float = 0.0
    long_context_share: float = 0.0
    # Levels of a workflow's call tree: 2 fans every call out from the root; deeper agents
    # chain each call on the previous one down to this depth (a planner calling tools calling
    # sub-agents), then fan out from the deepest level.
    max_depth: int = 2


AGENTS = (
    Agent(
        "support-bot",
        0.35,
        {
            "claude-haiku-4-5": 0.40,
            "gpt-4o-mini-2024-07-18": 0.30,
            "gpt-4.1-mini": 0.18,
            "support-llama-ft": 0.12,
        },
        3500,
        280,
        3.0,
    ),
    Agent(
        "sql-copilot",
        0.20,
        {"gpt-4.1": 0.45, "gpt-4.1-mini": 0.35, "claude-sonnet-4-5-20250929": 0.20},
        7000,
        500,
        4.0,
        max_depth=3,
    ),
    Agent(
        "doc-summarizer",
        0.15,
        {"claude-sonnet-4-5-20250929": 0.35, "gpt-5-mini": 0.40, "claude-haiku-4-5": 0.25},
        24000,
        1100,
        2.0,
        batch_share=0.35,
    ),
    Agent(
        "research-agent",
        0.10,
        {
            "o4-mini": 0.30,
            "gpt-5-mini": 0.30,
            "claude-sonnet-4-5-20250929": 0.30,
            "claude-opus-4-1": 0.10,
        },
        16000,
        1800,
        7.0,
        long_context_share=0.02,
        max_depth=4,
    ),
    Agent(
        "email-drafter",
        0.20,
        {"gpt-4.1-mini": 0.60, "claude-haiku-4-5": 0.40},
        1800,
        380,
        1.5,
    ),
)
AGENT_NAMES = np.array([a.name for a in AGENTS], dtype=object)
AGENT_MODEL_CUM = np.cumsum(
    [[a.models.get(m, 0.0) / sum(a.models.values()) for m in MODEL] for a in AGENTS], axis=1
)


def _pick(u: np.ndarray, group: np.ndarray, cumulative: np.ndarray) -> np.ndarray:
    """Category per row: `u` looked up in its group's cumulative distribution (loop per group)."""
    out = np.zeros(len(u), dtype=np.int64)
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        out[rows] = np.searchsorted(cumulative[g], u[rows], side="right")
    return np.minimum(out, cumulative.shape[1] - 1)


def _parent_positions(workflow: np.ndarray, max_depth: np.ndarray) -> np.ndarray:
    """Position of each call's parent (a root: its own) among calls in time order, `workflow`
    numbering each call's workflow: the k-th call of a workflow (k >= 1) calls from its
    min(k - 1, depth - 2)-th, so a tree is a chain down to its agent's `max_depth`, then a fan."""
    by_workflow = np.argsort(workflow, kind="stable")  # time order kept within a workflow
    counts = np.bincount(workflow)
    starts = np.cumsum(counts) - counts
    rank = np.empty(len(workflow), dtype=np.int64)
    rank[by_workflow] = np.arange(len(workflow)) - np.repeat(starts, counts)
    parent_rank = np.clip(np.minimum(rank - 1, max_depth - 2), 0, None)
    parent = by_workflow[starts[workflow] + parent_rank]
    return np.where(rank == 0, np.arange(len(workflow)), parent)


def _numbered(prefix: str, numbers: np.ndarray) -> np.ndarray:
    """`prefix` + each number, as Python strings (built by Arrow, not row by row)."""
    text = pc.cast(pa.array(numbers), pa.string())
    return pc.binary_join_element_wise(prefix, text, "").to_numpy(zero_copy_only=False)


class DemoCompany:
    """The demo tenants' LLM traffic, reproducible from `seed`, one UTC day at a time."""

    def __init__(self, config: CostConfig, seed: int = 7) -> None:
        self.config = config
        self.seed = int(seed)
        self.tenants = [t.id for t in config.tenants]
        rng = np.random.default_rng([self.seed, 0])
        tiers = [t.tier if t.tier in TIER_MONTHLY_USD else "basic" for t in config.tenants]
        self.monthly_target_usd = np.array([rng.uniform(*TIER_MONTHLY_USD[tier]) for tier in tiers])
        self.share = self.monthly_target_usd / self.monthly_target_usd.sum()
        # Call sizes are scaled so the targets are met at the default volume; other volumes
        # scale every tenant's spend alike.
        self.token_scale = self.monthly_target_usd.sum() / (
            30 * DEFAULT_EVENTS_PER_DAY * MEAN_CALL_USD
        )
        base = np.array([a.share for a in AGENTS])
        self.agent_cum = np.cumsum(rng.dirichlet(base * 300, size=len(self.tenants)), axis=1)
        self.users = np.array([TIER_USERS.get(tier, 10) for tier in tiers])
        self.zones = [ZoneInfo(t.timezone) for t in config.tenants]

    def write_log(
        self,
        out_dir: str | Path,
        *,
        start: date,
        days: int,
        events_per_day: int,
        fmt: str = "jsonl.gz",
        garbage_fraction: float = 0.0,
        late_fraction: float = 0.002,
    ) -> WriteSummary:
        """One file per day (late calls in the next day's file), plus `incidents.json`."""
        from cost_pipeline.demo.log_writer import write_log

        return write_log(
            self,
            Path(out_dir),
            start=start,
            days=days,
            events_per_day=events_per_day,
            fmt=fmt,
            garbage_fraction=garbage_fraction,
            late_fraction=late_fraction,
        )

    # -- incidents --------------------------------------------------------------------------

    def incidents(self, start: date, days: int) -> list[dict]:
        """The incidents overlapping `start` .. `start + days - 1`, as labels for detectors."""
        end = start + timedelta(days=days - 1)
        first = start.toordinal() // INCIDENT_BLOCK_DAYS - 2
        last = end.toordinal() // INCIDENT_BLOCK_DAYS
        found = [i for b in range(first, last + 1) for i in self._block_incidents(b)]
        return [
            i
            for i in found
            if date.fromisoformat(i["start_day"]) <= end
            and date.fromisoformat(i["end_day"]) >= start
        ]

    def _block_incidents(self, block: int) -> list[dict]:
        rng = np.random.default_rng([self.seed, 1, block])
        eligible = [i for i, t in enumerate(self.config.tenants) if t.tier != "free"]
        eligible = eligible or list(range(len(self.tenants)))
        out = []
        for j in range(int(rng.integers(1, 3))):
            kind = ("runaway_agent", "model_switch", "tenant_spike")[int(rng.integers(3))]
            tenant = int(rng.choice(eligible))
            first_day = date.fromordinal(
                block * INCIDENT_BLOCK_DAYS + int(rng.integers(INCIDENT_BLOCK_DAYS))
            )
            incident = {"incident_id": f"inc-{self.seed}-{block}-{j}", "kind": kind}
            incident["tenant_id"] = self.tenants[tenant]
            if kind == "runaway_agent":
                agent = AGENTS[int(rng.integers(len(AGENTS)))].name
                length, multiplier = int(rng.integers(1, 4)), float(rng.integers(5, 21))
                incident["driver"] = f"agent:{agent}"
            elif kind == "model_switch":
                old = list(SWITCHES)[int(rng.integers(len(SWITCHES)))]
                new, multiplier = SWITCHES[old]
                users = [a.name for a in AGENTS if old in a.models]
                length = int(rng.integers(5, 13))
                incident["driver"] = f"model:{new}"
                incident["from_model"] = old
                incident["agent_id"] = users[int(rng.integers(len(users)))]
            else:
                length, multiplier = int(rng.integers(1, 3)), float(rng.integers(3, 9))
                incident["driver"] = "tenant"
            incident["start_day"] = first_day.isoformat()
            incident["end_day"] = (first_day + timedelta(days=length - 1)).isoformat()
            incident["multiplier"] = multiplier
            out.append(incident)
        return out

    # -- events -----------------------------------------------------------------------------

    def day_volume(self, day: date, events_per_day: int) -> float:
        """Expected calls on `day` before incidents: weekday rhythm and growth around the volume."""
        # A fixed anchor keeps a day's volume a function of (seed, day) alone, whatever window
        # the demo covers; clamped so that far-off days stay within a year's growth.
        months = min(max((day - GROWTH_ANCHOR).days / 30, -12.0), 12.0)
        growth = (1 + MONTHLY_GROWTH) ** months
        return events_per_day * WEEKDAY_FACTOR[day.weekday()] * growth

    def events_for_day(
        self, day: date, events_per_day: int, *, with_incidents: bool = True
    ) -> pd.DataFrame:
        """Every call that happened on UTC `day`, in `llm_interactions` columns, by time."""
        rng = np.random.default_rng([self.seed, day.toordinal()])
        n = round(self.day_volume(day, events_per_day))
        counts = rng.multinomial(n, self.share)
        parts = [self._simulate(rng, day, np.repeat(np.arange(len(counts)), counts))]
        active = self.incidents(day, 1) if with_incidents else []
        for k, incident in enumerate(active):
            parts = self._apply(incident, parts, counts, day, k)
        return self._assemble(day, parts)

    def _apply(self, incident: dict, parts: list[dict], counts, day: date, k: int) -> list[dict]:
        """Add an incident's calls (own random stream, so the normal calls stay the same)."""
        tenant = self.tenants.index(incident["tenant_id"])
        rng = np.random.default_rng([self.seed, day.toordinal(), 2, k])
        extra_of = incident["multiplier"] - 1
        if incident["kind"] == "tenant_spike":
            extra = round(counts[tenant] * extra_of)
            return [*parts, self._simulate(rng, day, np.full(extra, tenant))]
        if incident["kind"] == "runaway_agent":
            agent = int(np.flatnonzero(incident["driver"].split(":", 1)[1] == AGENT_NAMES)[0])
            own = sum(int(((p["tenant"] == tenant) & (p["agent"] == agent)).sum()) for p in parts)
            extra = round(own * extra_of)
            return [*parts, self._simulate(rng, day, np.full(extra, tenant), agent=agent)]
        old, new = MODEL_INDEX[incident["from_model"]], MODEL_INDEX[incident["driver"][6:]]
        agent = int(np.flatnonzero(incident["agent_id"] == AGENT_NAMES)[0])
        for p in parts:
            moved = (p["tenant"] == tenant) & (p["agent"] == agent) & (p["model"] == old)
            p["model"] = np.where(moved, new, p["model"])
        return parts

    def _simulate(
        self, rng: np.random.Generator, day: date, tenant: np.ndarray, agent: int | None = None
    ) -> dict[str, np.ndarray]:
        """Calls of the given tenants (one entry per call), grouped into workflows."""
        n = len(tenant)
        if agent is None:
            agent_of = _pick(rng.random(n), tenant, self.agent_cum)
        else:
            agent_of = np.full(n, agent)
        order = np.argsort(tenant * len(AGENTS) + agent_of, kind="stable")
        tenant, agent_of = tenant[order], agent_of[order]
        # A runaway loop is one long workflow of quick retries; normal workflows are short.
        size = np.array([a.workflow_size for a in AGENTS])[agent_of] * (1 if agent is None else 25)
        boundary = np.ones(n, dtype=bool)
        boundary[1:] = (tenant[1:] != tenant[:-1]) | (agent_of[1:] != agent_of[:-1])
        root = boundary | (rng.random(n) < 1 / size)
        workflow = np.cumsum(root) - 1

        offsets = self._tz_offsets_ms(day)[tenant]
        local = np.where(
            rng.random(n) < 0.8,
            np.clip(rng.normal(13.5, 2.6, n), 7, 20.5),
            rng.uniform(0, 24, n),
        )
        start_ms = ((local * 3_600_000).astype(np.int64) - offsets) % DAY_MS
        gap = rng.exponential(4000 if agent is None else 1500, n).astype(np.int64) + 200
        gap[root] = 0
        within = np.cumsum(gap) - np.maximum.accumulate(np.where(root, np.cumsum(gap), 0))
        time_ms = np.minimum(start_ms[np.flatnonzero(root)][workflow] + within, DAY_MS - 1)

        model = _pick(rng.random(n), agent_of, AGENT_MODEL_CUM)
        return {
            "tenant": tenant,
            "agent": agent_of,
            "workflow": workflow,
            "root": root,
            "time_ms": time_ms,
            "model": model,
            "user": (rng.random(n) ** 2 * self.users[tenant]).astype(np.int64),
            "u": rng.random((n, 10), dtype=np.float32),
            "z": rng.standard_normal((n, 2), dtype=np.float32),
        }

    def _tz_offsets_ms(self, day: date) -> np.ndarray:
        noon = datetime.combine(day, time(12), UTC)
        return np.array([noon.astimezone(z).utcoffset().total_seconds() * 1000 for z in self.zones])

    def _assemble(self, day: date, parts: list[dict]) -> pd.DataFrame:
        """Tokens, tiers and ids for all calls of the day, once every incident is applied."""
        shift = np.cumsum(
            [0] + [int(p["workflow"].max()) + 1 if len(p["root"]) else 0 for p in parts]
        )
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        cols["workflow"] = np.concatenate(
            [p["workflow"] + s for p, s in zip(parts, shift, strict=False)]
        )
        order = np.argsort(cols["time_ms"], kind="stable")
        c = {k: v[order] for k, v in cols.items()}
        n, u, agent, model, root = len(order), c["u"], c["agent"], c["model"], c["root"]
        a = AGENTS

        input_median = np.array([x.input_median for x in a])[agent] * self.token_scale
        input_tokens = np.exp(np.log(input_median) + 0.7 * c["z"][:, 0])
        long = (u[:, 0] < np.array([x.long_context_share for x in a])[agent]) & (
            model == LONG_CONTEXT
        )
        input_tokens = np.where(long, 200_000 + u[:, 1] * 180_000, input_tokens)
        input_tokens = np.maximum(input_tokens, 60).astype(np.int64)
        output = np.exp(
            np.log(np.array([x.output_median for x in a])[agent] * self.token_scale)
            + 0.6 * c["z"][:, 1]
        )
        error = u[:, 2] < 0.01
        output = np.where(error, 0, np.maximum(output, 1)).astype(np.int64)
        window = CONTEXT_WINDOW[model]
        output = np.minimum(output, window // 4)
        input_tokens = np.minimum(input_tokens, window - output)
        reasoning = np.where(REASONS[model], (output * (0.3 + 0.5 * u[:, 3])).astype(np.int64), 0)

        prefix = (input_tokens * (0.3 + 0.5 * u[:, 4])).astype(np.int64)
        anthropic, openai = IS_ANTHROPIC[model], IS_OPENAI[model]
        writes = anthropic & root & (u[:, 5] < 0.6)
        write_1h = writes & (u[:, 6] < 0.25)
        cache_write = np.where(writes & ~write_1h, prefix, 0)
        cache_write_1h = np.where(write_1h, prefix, 0)
        reads = ~root & ((anthropic & (u[:, 5] < 0.8)) | (openai & (u[:, 5] < 0.6)))
        cache_read = np.where(reads, np.where(openai, prefix // 128 * 128, prefix), 0)

        batch = (u[:, 7] < np.array([x.batch_share for x in a])[agent]) & HAS_BATCH[model]
        tier = np.full(n, None, dtype=object)
        tier[openai & ~batch & (u[:, 8] < 0.06)] = "priority"
        tier[openai & ~batch & HAS_FLEX[model] & (u[:, 8] >= 0.06) & (u[:, 8] < 0.18)] = "flex"
        tier[anthropic & ~batch & (u[:, 8] < 0.3)] = "standard"
        latency = 250 + output * (8 + 20 * u[:, 9]) + input_tokens / 200
        latency = np.where(batch, latency * 40, latency).astype(np.int64)

        stamp = f"{self.seed}-{day:%Y%m%d}"
        event_id = _numbered(f"ev-{stamp}-", np.arange(n))
        _, wf_of = np.unique(c["workflow"], return_inverse=True)
        parent = event_id[_parent_positions(wf_of, np.array([x.max_depth for x in a])[agent])]
        parent[parent == event_id] = None  # a root is its own parent position
        wf_ids = _numbered(f"wf-{stamp}-", wf_of)
        tenants = np.array(self.tenants, dtype=object)[c["tenant"]]
        most = int(self.users.max())
        names = [f"{t}-u{u:03d}" for t in self.tenants for u in range(most)]
        users = np.array(names, dtype=object)[c["tenant"] * most + c["user"]]
        stamps = np.datetime64(day, "ms") + c["time_ms"].astype("timedelta64[ms]")
        occurred = pd.to_datetime(stamps.astype("datetime64[ns]"), utc=True)
        frame = pd.DataFrame(
            {
                "event_id": event_id,
                "occurred_at": occurred,
                "day": np.full(n, day, dtype=object),
                "tenant_id": tenants,
                "user_id": users,
                "agent_id": AGENT_NAMES[agent],
                "workflow_id": wf_ids,
                "parent_event_id": parent,
                "provider": PROVIDER[model],
                "model": MODEL[model],
                "service_tier": tier,
                "batch": batch,
                "input_tokens": input_tokens,
                "cache_read_tokens": cache_read,
                "cache_write_tokens": cache_write,
                "cache_write_1h_tokens": cache_write_1h,
                "output_tokens": output,
                "reasoning_tokens": reasoning,
                "web_search_requests": np.zeros(n, dtype=np.int64),
                "latency_ms": latency,
                "status": np.where(error, "error", "ok").astype(object),
                "source_file": np.full(n, None, dtype=object),
                # Token-priced chat calls: no usage beyond tokens, no app-reported cost.
                **{c.name: np.full(n, None, dtype=object) for c in CALL_UNITS},
            }
        )
        return frame[LLM_INTERACTIONS.column_names]
