"""Provider names the pipeline accepts: the price catalog's, plus custom ones from overrides."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from genai_prices import data_snapshot

from cost_pipeline.lib.config import PriceOverride


@cache
def catalog_providers() -> frozenset[str]:
    """Provider ids of the bundled genai-prices snapshot (offline)."""
    return frozenset(p.id for p in data_snapshot.get_snapshot().providers)


def known_providers(overrides: Iterable[PriceOverride] = ()) -> frozenset[str]:
    """Catalog providers plus providers that only exist in price overrides (self-hosted models)."""
    return catalog_providers() | {o.provider for o in overrides}
