"""A client for the ingest API, used by `callstream simulate --url` and the demo.

Batches are retried on connection errors, 429 and 5xx with exponential backoff:
records carry idempotency ids, so a batch sent twice is stored once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import httpx
import msgspec

from callstream.model.telemetry import TelemetryRecord, encode_batch

INGEST_PATH = "/v1/Telemetry"


class IngestRefused(RuntimeError):
    """The server refused a batch for a reason a retry cannot fix (400, 401, 413)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"ingest refused the batch with {status}: {body[:500]}")
        self.status = status


class IngestCounts(msgspec.Struct):
    accepted: int = 0


class IngestClient:
    def __init__(
        self,
        url: str,
        account_sid: str,
        auth_token: str,
        *,
        attempts: int = 8,
        timeout: float = 30.0,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"), auth=(account_sid, auth_token), timeout=timeout
        )
        self._attempts = attempts
        self._random = random.Random()
        self.totals = IngestCounts()

    async def __aenter__(self) -> IngestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.aclose()

    async def send(self, records: Sequence[TelemetryRecord]) -> IngestCounts:
        body = encode_batch(list(records))
        delay = 0.2
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.post(
                    INGEST_PATH, content=body, headers={"content-type": "application/json"}
                )
            except httpx.TransportError:
                if attempt == self._attempts:
                    raise
            else:
                if response.status_code == 202:
                    counts = msgspec.json.decode(response.content, type=IngestCounts)
                    self.totals.accepted += counts.accepted
                    return counts
                if response.status_code != 429 and response.status_code < 500:
                    raise IngestRefused(response.status_code, response.text)
                if attempt == self._attempts:
                    raise IngestRefused(response.status_code, response.text)
            await asyncio.sleep(delay * (0.5 + self._random.random()))
            delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")
