"""OpenAI organization Usage and Costs APIs: the real admin client and its offline twin.

Both return the documented result objects (`organization.usage.completions.result`,
`organization.costs.result`), flattened out of their buckets, each with the bucket's
`start_time` attached as `bucket_start_time`. Normalizing them is `lib.provider_usage`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from cost_pipeline.demo.provider_twins import openai_cost_buckets, openai_usage_buckets
from cost_pipeline.resources.http import ApiError, JsonHttpClient
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


def flatten_buckets(
    buckets: Iterable[Any], start_key: str, attach_as: str, *, service: str, endpoint: str
) -> list[dict[str, Any]]:
    """The results of every bucket, each with its bucket's start attached under `attach_as`.

    A bucket that is not an object with a `results` list and a start is a malformed page.
    """
    out: list[dict[str, Any]] = []
    for bucket in buckets:
        results = bucket.get("results") if isinstance(bucket, dict) else None
        if not isinstance(results, list) or bucket.get(start_key) is None:
            problem = f"malformed bucket (no {start_key}/results): {bucket!r:.200}"
            raise ApiError(service, endpoint, 200, problem)
        out.extend({**r, attach_as: bucket[start_key]} for r in results if isinstance(r, dict))
    return out


class OpenAIAdmin(dg.ConfigurableResource):
    """What the assets need from OpenAI's admin API; the real client and the twin implement it."""

    @property
    def is_configured(self) -> bool:
        return True

    @property
    def source_label(self) -> str:
        """Where the data comes from, for run metadata (never the key)."""
        return "offline twin (demo)"

    def usage_completions(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Completions usage results of the 1d buckets in [start, end), grouped by model,
        project_id, api_key_id and batch, each with `bucket_start_time` (Unix seconds)."""
        raise NotImplementedError

    def costs(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Cost results of the 1d buckets in [start, end), grouped by project_id and line_item,
        each with `bucket_start_time` (Unix seconds)."""
        raise NotImplementedError


class OpenAIAdminResource(OpenAIAdmin):
    """The real client. `admin_key` empty means the source is not configured."""

    admin_key: str = Field(default="", description="An OpenAI *admin* key (OPENAI_ADMIN_KEY).")
    base_url: str = "https://api.openai.com/v1"
    timeout_seconds: float = 30.0
    max_retries: int = 5
    backoff_seconds: float = 0.5

    def __repr_args__(self):  # the key must never reach a log line or an error message
        return [(k, v) for k, v in super().__repr_args__() if k != "admin_key"]

    @property
    def is_configured(self) -> bool:
        return bool(self.admin_key)

    @property
    def source_label(self) -> str:
        return f"{SERVICE} at {self.base_url}"

    def _client(self) -> JsonHttpClient:
        if not self.admin_key:
            raise ValueError("OpenAI admin API is not configured: set OPENAI_ADMIN_KEY")
        return JsonHttpClient(
            service=SERVICE,
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.admin_key}"},
            timeout_seconds=self.timeout_seconds,
            max_retries=self.max_retries,
            backoff_seconds=self.backoff_seconds,
        )

    def _buckets(self, path: str, start: datetime, end: datetime, group_by: tuple[str, ...]):
        params = {
            "start_time": unix_seconds(start),
            "end_time": unix_seconds(end),
            "bucket_width": "1d",
            "group_by": list(group_by),
            "limit": PAGE_LIMIT,
        }
        return flatten_buckets(
            self._client().paginate(path, params),
            "start_time",
            "bucket_start_time",
            service=SERVICE,
            endpoint=f"GET {path}",
        )

    def usage_completions(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return self._buckets(USAGE_PATH, start, end, USAGE_GROUP_BY)

    def costs(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return self._buckets(COSTS_PATH, start, end, COSTS_GROUP_BY)


class OpenAIAdminTwin(OpenAIAdmin):
    """Offline twin: the demo company's usage and costs, as OpenAI would report them."""

    cost_config: CostConfigResource = Field(default_factory=CostConfigResource)

    def usage_completions(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        buckets = openai_usage_buckets(self.cost_config.get(), start=start, end=end)
        return flatten_buckets(
            buckets, "start_time", "bucket_start_time", service="twin", endpoint=USAGE_PATH
        )

    def costs(self, *, start: datetime, end: datetime) -> list[dict[str, Any]]:
        buckets = openai_cost_buckets(self.cost_config.get(), start=start, end=end)
        return flatten_buckets(
            buckets, "start_time", "bucket_start_time", service="twin", endpoint=COSTS_PATH
        )
