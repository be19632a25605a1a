"""Anthropic Admin API usage and cost reports: the real admin client and its offline twin.

Both return the documented result objects of `/organizations/usage_report/messages` and
`/organizations/cost_report`, flattened out of their buckets, each with the bucket's
`starting_at` (RFC 3339) attached as `bucket_starting_at`. Cost amounts stay as the API sends
them (decimal strings in cents); `lib.provider_usage` normalizes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field

from cost_pipeline.demo.provider_twins import anthropic_cost_buckets, anthropic_usage_buckets
from cost_pipeline.resources.admin_api import AdminApiClient, ProviderAdmin
from cost_pipeline.resources.warehouse import CostConfigResource

SERVICE = "Anthropic admin API"
API_VERSION = "2023-06-01"
USAGE_PATH = "/organizations/usage_report/messages"
COSTS_PATH = "/organizations/cost_report"
USAGE_GROUP_BY = ("model", "workspace_id", "api_key_id", "service_tier", "context_window")
COSTS_GROUP_BY = ("workspace_id", "description")
PAGE_LIMIT = 31


def rfc3339(moment: datetime) -> str:
    """`moment` as RFC 3339 UTC (`2026-01-01T00:00:00Z`); a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AnthropicAdmin(ProviderAdmin):
    """What the assets need from the Anthropic Admin API; the client and the twin implement it."""

    bucket_start: ClassVar[str] = "starting_at"
    attach_as: ClassVar[str] = "bucket_starting_at"

    def usage_messages(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Messages usage results of the 1d buckets in [start, end), grouped by model,
        workspace_id, api_key_id, service_tier and context_window, with `bucket_starting_at`."""
        raise NotImplementedError

    def costs(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Cost report results of the 1d buckets in [start, end), grouped by workspace_id and
        description, with `bucket_starting_at`."""
        raise NotImplementedError


class AnthropicAdminResource(AdminApiClient, AnthropicAdmin):
    """The real client. `admin_key` empty means the source is not configured."""

    service: ClassVar[str] = SERVICE
    key_env: ClassVar[str] = "ANTHROPIC_ADMIN_KEY"

    admin_key: str = Field(default="", description="An Anthropic admin key (ANTHROPIC_ADMIN_KEY).")
    base_url: str = "https://api.anthropic.com/v1"

    def _auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self.admin_key, "anthropic-version": API_VERSION}

    def _query(self, start: datetime, end: datetime, group_by: tuple[str, ...]) -> dict[str, Any]:
        return {
            "starting_at": rfc3339(start),
            "ending_at": rfc3339(end),
            "bucket_width": "1d",
            "group_by[]": list(group_by),
            "limit": PAGE_LIMIT,
        }

    def usage_messages(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return self._buckets(USAGE_PATH, start, end, USAGE_GROUP_BY)

    def costs(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return self._buckets(COSTS_PATH, start, end, COSTS_GROUP_BY)


class AnthropicAdminTwin(AnthropicAdmin):
    """Offline twin: the demo company's usage and costs, as Anthropic would report them."""

    cost_config: CostConfigResource = Field(default_factory=CostConfigResource)

    def usage_messages(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        buckets = anthropic_usage_buckets(self.cost_config.get(), start=start, end=end)
        return self._flatten(buckets, service="twin", endpoint=USAGE_PATH)

    def costs(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        buckets = anthropic_cost_buckets(self.cost_config.get(), start=start, end=end)
        return self._flatten(buckets, service="twin", endpoint=COSTS_PATH)
