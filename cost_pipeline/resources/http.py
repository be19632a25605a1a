"""The wire shared by every HTTP resource: sessions with retries, timeouts and clear errors.

Retries use urllib3's `Retry` (exponential backoff with jitter, `Retry-After` honoured on 429
and 503) on 429, 5xx, connection errors and read timeouts. When retries run out the caller gets
an `ApiError` naming the service, the endpoint, the status and the provider's own message —
never the credentials, which live only in the session's headers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRY_STATUSES = (429, 500, 502, 503, 504, 529)  # 529: Anthropic "overloaded"
SECRET_HEADERS = ("authorization", "x-api-key")


class ApiError(RuntimeError):
    """A request failed for good: after retries, or with a non-retryable status or bad body."""

    def __init__(self, service: str, endpoint: str, status: int | None, message: str) -> None:
        self.service = service
        self.endpoint = endpoint
        self.status = status
        self.message = message
        where = f"{service} {endpoint}"
        what = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"{where} failed ({what}): {message}")


def retry_policy(max_retries: int, backoff_seconds: float) -> Retry:
    return Retry(
        total=max_retries,
        connect=max_retries,
        read=max_retries,
        status=max_retries,
        other=0,
        backoff_factor=backoff_seconds,
        backoff_jitter=backoff_seconds,
        backoff_max=60.0,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,  # admin reads are GETs; POSTs we send carry idempotency keys
        respect_retry_after_header=True,
        raise_on_status=False,
    )


class JsonHttpClient:
    """A JSON-over-HTTP client for one service: base URL, auth headers, retries, timeouts."""

    def __init__(
        self,
        *,
        service: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float = 30.0,
        max_retries: int = 5,
        backoff_seconds: float = 0.5,
    ) -> None:
        self.service = service
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", **(headers or {})})
        adapter = HTTPAdapter(max_retries=retry_policy(max_retries, backoff_seconds))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def __repr__(self) -> str:
        return f"JsonHttpClient({self.service}, {self.base_url})"

    def get_json(self, path: str, params: Any = None) -> Any:
        return self.request_json("GET", path, params=params)

    def request_json(self, method: str, path: str, *, params: Any = None, **kwargs: Any) -> Any:
        endpoint = f"{method} {path}"
        url = f"{self.base_url}/{path.lstrip('/')}"
        try:
            response = self.session.request(
                method, url, params=params, timeout=self.timeout_seconds, **kwargs
            )
        except requests.exceptions.RetryError as exc:
            raise ApiError(self.service, endpoint, None, f"retries exhausted: {exc}") from None
        except requests.exceptions.Timeout:
            raise ApiError(
                self.service, endpoint, None, f"timed out after {self.timeout_seconds}s"
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise ApiError(self.service, endpoint, None, f"connection failed: {exc}") from None
        if response.status_code >= 400:
            raise ApiError(self.service, endpoint, response.status_code, _error_message(response))
        try:
            return response.json()
        except (json.JSONDecodeError, requests.exceptions.JSONDecodeError):
            snippet = response.text[:200].replace("\n", " ")
            raise ApiError(
                self.service, endpoint, response.status_code, f"response is not JSON: {snippet!r}"
            ) from None

    def paginate(
        self,
        path: str,
        params: dict[str, Any],
        *,
        data_key: str = "data",
        cursor_param: str = "page",
    ) -> Iterator[dict[str, Any]]:
        """Yield every item of a cursor-paginated list (`data`, `has_more`, `next_page`).

        Stops at the last page; a server that repeats a cursor is an error, not an endless loop.
        """
        seen: set[str] = set()
        query = dict(params)
        while True:
            body = self.get_json(path, params=query)
            if not isinstance(body, dict) or not isinstance(body.get(data_key), list):
                raise ApiError(self.service, f"GET {path}", 200, f"page has no {data_key!r} list")
            yield from body[data_key]
            cursor = body.get("next_page")
            if not body.get("has_more") or not cursor:
                return
            if cursor in seen:
                raise ApiError(
                    self.service, f"GET {path}", 200, f"cursor {cursor!r} was returned twice"
                )
            seen.add(cursor)
            query[cursor_param] = cursor


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason or "no body"
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err.get("type") or err)
        if err:
            return str(err)
        if body.get("message"):
            return str(body["message"])
    return json.dumps(body)[:300]
