"""Where the ECB's euro reference rates come from: the ECB over HTTPS, a local file (the demo's
offline twin, or a mirror), or nowhere (not configured: only the configured fallback rates)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import requests
from requests.adapters import HTTPAdapter

from cost_pipeline.resources.http import ApiError, retry_policy

ECB_90_DAYS = "https://www.ecb.europa.eu/stats/eurofxref/eurofxref-hist-90d.xml"


class EcbRatesResource(dg.ConfigurableResource):
    """`url`: an http(s) URL of an ECB rates XML file, or a local path; empty: not configured."""

    url: str = ""
    timeout_seconds: float = 30.0
    max_retries: int = 5
    backoff_seconds: float = 0.5

    @property
    def is_configured(self) -> bool:
        return bool(self.url)

    def fetch(self) -> bytes:
        """The file's bytes; an HTTP error after the retries raises `ApiError`."""
        if not self.url.startswith(("http://", "https://")):
            return Path(self.url.removeprefix("file://")).expanduser().read_bytes()
        session = requests.Session()
        session.mount(
            "http://", HTTPAdapter(max_retries=retry_policy(self.max_retries, self.backoff_seconds))
        )
        session.mount(
            "https://",
            HTTPAdapter(max_retries=retry_policy(self.max_retries, self.backoff_seconds)),
        )
        response = session.get(self.url, timeout=self.timeout_seconds)
        if response.status_code != 200:
            raise ApiError("ecb", self.url, response.status_code, response.text[:200])
        return response.content


class EcbRatesTwin(EcbRatesResource):
    """The demo's offline twin: an ECB-format file of made-up but steady rates for the demo's
    business days (a slow drift around EUR/USD 1.08, GBP 0.85 and JPY 162 per euro)."""

    first_day: str = ""
    last_day: str = ""

    @property
    def is_configured(self) -> bool:
        return True

    def fetch(self) -> bytes:
        from datetime import date, timedelta

        first, last = date.fromisoformat(self.first_day), date.fromisoformat(self.last_day)
        cubes = []
        day = last
        while day >= first:
            if day.weekday() < 5:
                t = (day - first).days
                rates = {"USD": 1.08 + 0.0004 * t, "GBP": 0.85 - 0.0001 * t, "JPY": 162 + 0.05 * t}
                inner = "".join(f'<Cube currency="{c}" rate="{r:.4f}"/>' for c, r in rates.items())
                cubes.append(f'<Cube time="{day.isoformat()}">{inner}</Cube>')
            day -= timedelta(days=1)
        return (
            '<?xml version="1.0" encoding="UTF-8"?><gesmes:Envelope '
            'xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" '
            'xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">'
            f"<Cube>{''.join(cubes)}</Cube></gesmes:Envelope>"
        ).encode()
