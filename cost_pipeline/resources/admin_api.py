"""What the provider admin API resources share (OpenAI, Anthropic): buckets in, results out.

`ProviderAdmin` is the base of each provider's interface (and so of its offline twin): results
are flattened out of their buckets with the bucket's start attached. `AdminApiClient` is the real
client's half: a `JsonHttpClient` from the resource's fields and cursor pages of buckets. Each
provider's own facts (service name, key variable, auth headers, query parameters, paths,
group-bys, bucket keys) stay in its module.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar

import dagster as dg

from cost_pipeline.resources.http import ApiError, JsonHttpClient


def flatten_buckets(
    buckets: Iterable[Any], start_key: str, attach_as: str, *, service: str, endpoint: str
) -> list[dict[str, Any]]:
    """The results of every bucket, each with its bucket's start attached under `attach_as`.

    A bucket that is not an object with a `results` list and a start is a malformed page.
    OpenAI's newer spec revisions name the list `result`: both are read.
    """
    out: list[dict[str, Any]] = []
    for bucket in buckets:
        results = None
        if isinstance(bucket, dict):
            results = bucket.get("results", bucket.get("result"))
        if not isinstance(results, list) or bucket.get(start_key) is None:
            problem = f"malformed bucket (no {start_key}/results): {bucket!r:.200}"
            raise ApiError(service, endpoint, 200, problem)
        out.extend({**r, attach_as: bucket[start_key]} for r in results if isinstance(r, dict))
    return out


class ProviderAdmin(dg.ConfigurableResource):
    """A provider's admin usage/cost source; by default the offline twin's answers."""

    bucket_start: ClassVar[str]  # the bucket's start field
    attach_as: ClassVar[str]  # the name each result carries it under

    @property
    def is_configured(self) -> bool:
        return True

    @property
    def source_label(self) -> str:
        """Where the data comes from, for run metadata (never the key)."""
        return "offline twin (demo)"

    def _flatten(
        self, buckets: Iterable[Any], *, service: str, endpoint: str
    ) -> list[dict[str, Any]]:
        return flatten_buckets(
            buckets, self.bucket_start, self.attach_as, service=service, endpoint=endpoint
        )


class AdminApiClient(ProviderAdmin):
    """The real client's shared half; `admin_key` empty means the source is not configured.

    Mixed in ahead of the provider's interface, which supplies the bucket keys; the provider's
    client supplies `service`, `key_env`, `_auth_headers()` and `_query()`.
    """

    service: ClassVar[str]
    key_env: ClassVar[str]  # the environment variable the key comes from, for the error

    admin_key: str = ""
    base_url: str
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
        return f"{self.service} at {self.base_url}"

    def _auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _query(self, start: datetime, end: datetime, group_by: tuple[str, ...]) -> dict[str, Any]:
        raise NotImplementedError

    def _client(self) -> JsonHttpClient:
        if not self.admin_key:
            raise ValueError(f"{self.service} is not configured: set {self.key_env}")
        return JsonHttpClient(
            service=self.service,
            base_url=self.base_url,
            headers=self._auth_headers(),
            timeout_seconds=self.timeout_seconds,
            max_retries=self.max_retries,
            backoff_seconds=self.backoff_seconds,
        )

    def _buckets(
        self, path: str, start: datetime, end: datetime, group_by: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        """Every page of 1d buckets at `path` for [start, end), flattened."""
        pages = self._client().paginate(path, self._query(start, end, group_by))
        return self._flatten(pages, service=self.service, endpoint=f"GET {path}")
