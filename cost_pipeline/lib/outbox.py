"""The alert outbox: every alert is a row keyed by its fact, so it is sent once and never lost.

Key: `alert_key(tenant, period, kind, ref)` where `ref` is the threshold, the anomaly id or the
run id. Life of a row:

    pending --claim--> sending --send ok--> sent | dry_run
                          |--send failed--> pending (attempts + 1, next_attempt_at backed off)
                          |                 or failed once `max_attempts` is reached
    pending --a higher threshold of the same tenant and period arrives--> superseded

`enqueue` inserts only facts not seen before (a re-run of the whole month adds nothing) and
keeps only the highest budget threshold of a tenant and period. `claim` moves due rows to
`sending` under a lock, so two runs never send the same row. A crash between Slack's answer and
`record_*` leaves a row in `sending`; after `lease` it is claimed again — the one case where an
alert can be sent twice (at-least-once in that window, never lost).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pandas as pd

LOCK = "alert_outbox"
THRESHOLD_KIND = "budget_threshold"
DONE = ("sent", "dry_run")


def alert_key(tenant_id: str, period: str, kind: str, ref: str | float) -> str:
    if isinstance(ref, float):
        ref = f"{ref:g}"
    return f"{tenant_id}:{period}:{kind}:{ref}"


def backoff(attempts: int, *, base: float = 60.0, cap: float = 3600.0) -> timedelta:
    """Delay before the next try after `attempts` failed ones: base * 2^(n-1), capped."""
    return timedelta(seconds=min(cap, base * 2 ** max(attempts - 1, 0)))


@dataclass
class EnqueueResult:
    inserted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)


class SendError(Exception):
    """A message could not be delivered; `retryable` says whether trying later may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


# send(channel, text, blocks) -> message ts (None in dry-run); raises SendError.
Sender = Callable[[str, str, list[dict]], str | None]
DigestBuilder = Callable[[pd.DataFrame], tuple[str, list[dict]]]


@dataclass
class DrainResult:
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    messages: int = 0
    digests: int = 0
