"""OpenAI organization Usage and Costs APIs: the real admin client and its offline twin.

Both return the documented result objects (`organization.usage.<endpoint>.result` of every
usage endpoint that bills, `organization.costs.result`), flattened out of their buckets, each
with the bucket's `start_time` attached as `bucket_start_time` and, for usage, the endpoint it
was fetched from as `usage_endpoint`. The endpoints, their group-bys and units are
`lib.usage_endpoints`' registry; normalizing is `lib.provider_usage`'s job.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field

from cost_pipeline.demo.provider_twins import openai_cost_buckets, openai_usage_buckets
from cost_pipeline.lib.usage_endpoints import (
    OPENAI_ENDPOINT_NAMES,
    OPENAI_USAGE_ENDPOINTS,
    UsageEndpoint,
)
from cost_pipeline.resources.admin_api import AdminApiClient, ProviderAdmin
from cost_pipeline.resources.admin_api import flatten_buckets as flatten_buckets  # re-export
from cost_pipeline.resources.warehouse import CostConfigResource

SERVICE = "OpenAI admin API"
USAGE_ENDPOINTS: dict[str, UsageEndpoint] = {e.name: e for e in OPENAI_USAGE_ENDPOINTS}
USAGE_PATH = USAGE_ENDPOINTS["completions"].path
COSTS_PATH = "/organization/costs"
USAGE_GROUP_BY = USAGE_ENDPOINTS["completions"].group_by
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

    def usage_endpoint(self, name: str, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Usage results of endpoint `name` (a `USAGE_ENDPOINTS` key) for the 1d buckets in
        [start, end), grouped by the endpoint's group-bys, each with `bucket_start_time` (Unix
        seconds) and `usage_endpoint`."""
        raise NotImplementedError

    def usage(
        self,
        *,
        start: datetime,
        end: datetime,
        endpoints: Sequence[str] = OPENAI_ENDPOINT_NAMES,
    ) -> list[dict[str, Any]]:
        """Usage results of every billing usage endpoint (or of `endpoints`), one after the
        other, for the 1d buckets in [start, end)."""
        return [r for name in endpoints for r in self.usage_endpoint(name, start=start, end=end)]

    def usage_completions(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Completions usage results of the 1d buckets in [start, end), grouped by model,
        project_id, api_key_id and batch, each with `bucket_start_time` (Unix seconds)."""
        return self.usage_endpoint("completions", start=start, end=end)

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

    def usage_endpoint(self, name: str, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        spec = USAGE_ENDPOINTS[name]
        results = self._buckets(spec.path, start, end, spec.group_by)
        return [{**r, "usage_endpoint": name} for r in results]

    def costs(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return self._buckets(COSTS_PATH, start, end, COSTS_GROUP_BY)


class OpenAIAdminTwin(OpenAIAdmin):
    """Offline twin: the demo company's usage and costs, as OpenAI would report them (the demo
    company calls chat models only: the other usage endpoints answer no buckets)."""

    cost_config: CostConfigResource = Field(default_factory=CostConfigResource)

    def usage_endpoint(self, name: str, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        spec = USAGE_ENDPOINTS[name]
        if name != "completions":
            return []  # the demo company only calls chat models
        buckets = openai_usage_buckets(self.cost_config.get(), start=start, end=end)
        results = self._flatten(buckets, service="twin", endpoint=spec.path)
        return [{**r, "usage_endpoint": name} for r in results]

    def costs(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        buckets = openai_cost_buckets(self.cost_config.get(), start=start, end=end)
        return self._flatten(buckets, service="twin", endpoint=COSTS_PATH)
