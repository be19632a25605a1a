"""Provider names the pipeline accepts: the price catalog's, plus custom ones from overrides and
rate cards."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from genai_prices import data_snapshot

from cost_pipeline.lib.config import PriceOverride, RateCard


@cache
def catalog_providers() -> frozenset[str]:
    """Provider ids of the bundled genai-prices snapshot (offline)."""
    return frozenset(p.id for p in data_snapshot.get_snapshot().providers)


def known_providers(
    overrides: Iterable[PriceOverride] = (), rate_cards: Iterable[RateCard] = ()
) -> frozenset[str]:
    """Catalog providers plus providers that only exist in price overrides (self-hosted models)
    or rate cards (services priced per character, second, image or request), lower case."""
    custom = {o.provider.lower() for o in overrides} | {c.provider.lower() for c in rate_cards}
    return catalog_providers() | custom
