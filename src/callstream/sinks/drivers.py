"""What the delivery worker asks of a sink driver, and which driver serves which sink type.

A driver sends one request's worth of CloudEvents (each one compact JSON, in queue order) to
one sink and says how it ended. It never retries across calls itself: the delivery worker
keeps the durable queue, the retry schedule and the dead letters, so every driver gets the
same at-least-once semantics. A driver may deliver part of a request (Kinesis PutRecords
accepts some records and refuses others); it then names the delivered ones in
``Outcome.delivered`` and the worker retries only the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import aiohttp
import msgspec

from callstream.store.control import Sink


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How one request ended: delivered, to be retried, or to be given up on."""

    ok: bool
    """Every event of the request was delivered."""
    retry: bool
    """When not ok: whether trying again later may succeed."""
    status: int | None = None
    """The HTTP status, None when no response came back."""
    error: str | None = None
    delivered: tuple[int, ...] = ()
    """When not ok: the indices (into the request's events) that were delivered anyway."""


def status_outcome(status: int) -> Outcome:
    """An HTTP sink's answer: 2xx delivered; 429 and 5xx worth retrying; other codes refused."""
    if 200 <= status < 300:
        return Outcome(ok=True, retry=False, status=status)
    if status == 429 or status >= 500:
        return Outcome(ok=False, retry=True, status=status, error=f"HTTP {status} (91306)")
    return Outcome(ok=False, retry=False, status=status, error=f"HTTP {status} (91305)")


def failure_outcome(exc: BaseException, timeout: float) -> Outcome:
    """A request to an HTTP sink that got no answer (every such failure is retried)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Outcome(ok=False, retry=True, error=f"could not connect (91307): {exc}")
    if isinstance(exc, TimeoutError):
        return Outcome(ok=False, retry=True, error=f"no response within {timeout:g}s (91308)")
    return Outcome(
        ok=False, retry=True, error=f"request failed (91307): {type(exc).__name__}: {exc}"
    )


class SinkDriver(Protocol):
    async def send(self, sink: Sink, auth_token: str, events: Sequence[bytes]) -> Outcome:
        """Deliver ``events`` (CloudEvents as compact JSON) to ``sink`` in one request.
        ``auth_token`` is the sink's account's token (what Twilio signs webhooks with)."""
        ...

    async def close(self) -> None:
        """Release pooled connections; called once when delivery stops."""
        ...


Drivers = Mapping[str, SinkDriver]
"""Drivers by sink type (``webhook``, ``kinesis``, ``segment``)."""
