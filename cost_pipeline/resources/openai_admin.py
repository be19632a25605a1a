"""OpenAI organization Usage and Costs APIs: the real admin client and its offline twin.

Both return the documented result objects (`organization.usage.completions.result`,
`organization.costs.result`), flattened out of their buckets, each with the bucket's
`start_time` attached as `bucket_start_time`. Normalizing them is `lib.provider_usage`'s job.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field

from cost_pipeline.demo.provider_twins import openai_cost_buckets, openai_usage_buckets
from cost_pipeline.resources.admin_api import AdminApiClient, ProviderAdmin
from cost_pipeline.resources.admin_api import flatten_buckets as flatten_buckets  # re-export
from cost_pipeline.resources.warehouse import CostConfigResource

SERVICE = "OpenAI admin API"
USAGE_PATH = "/organization/usage/completions"
COSTS_PATH = "/organization/costs"
USAGE_GROUP_BY = ("model", "project_id", "api_key_id", "batch")
COSTS_GROUP_BY = ("project_id", "line_item")
# 1d buckets: the usage endpoint allows up to 31 per page, costs up to 180; 31 suits both.
PAGE_LIMIT = 31


def unix_seconds(moment: datetime) -> int:
    """Unix seconds of `moment`; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


class OpenAIAdmin(ProviderAdmin):
    """What the assets need from OpenAI's admin API; the real client and the twin implement it."""

    bucket_start: ClassVar[str] = "start_time"
    attach_as: ClassVar[str] = "bucket_start_time"

    def usage_completions(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Completions usage results of the 1d buckets in [start, end), grouped by model,
        project_id, api_key_id and batch, each with `bucket_start_time` (Unix seconds)."""
        raise NotImplementedError

    def costs(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Cost results of the 1d buckets in [start, end), grouped by project_id and line_item,
        each with `bucket_start_time` (Unix seconds)."""
        raise NotImplementedError


class OpenAIAdminResource(AdminApiClient, OpenAIAdmin):
    """The real client. `admin_key` empty means the source is not configured."""

    service: ClassVar[str] = SERVICE
    key_env: ClassVar[str] = "OPENAI_ADMIN_KEY"

    admin_key: str = Field(default="", description="An OpenAI *admin* key (OPENAI_ADMIN_KEY).")
    base_url: str = "https://api.openai.com/v1"

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def _query(self, start: datetime, end: datetime, group_by: tuple[str, ...]) -> dict[str, Any]:
        return {
            "start_time": unix_seconds(start),
            "end_time": unix_seconds(end),
            "bucket_width": "1d",
            "group_by": list(group_by),
            "limit": PAGE_LIMIT,
        }

    def usage_completions(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return self._buckets(USAGE_PATH, start, end, USAGE_GROUP_BY)

    def costs(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return self._buckets(COSTS_PATH, start, end, COSTS_GROUP_BY)


class OpenAIAdminTwin(OpenAIAdmin):
    """Offline twin: the demo company's usage and costs, as OpenAI would report them."""

    cost_config: CostConfigResource = Field(default_factory=CostConfigResource)

    def usage_completions(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        buckets = openai_usage_buckets(self.cost_config.get(), start=start, end=end)
        return self._flatten(buckets, service="twin", endpoint=USAGE_PATH)

    def costs(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        buckets = openai_cost_buckets(self.cost_config.get(), start=start, end=end)
        return self._flatten(buckets, service="twin", endpoint=COSTS_PATH)
