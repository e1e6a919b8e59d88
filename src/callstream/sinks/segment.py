"""The Segment sink driver: CloudEvents as Segment ``track`` calls through the batch API.

Which Segment call Twilio makes is not documented (event-streams-api.md §4), so callstream
maps each CloudEvent onto one track call of Segment's HTTP Tracking API:

- ``event`` = the CloudEvent ``type``; ``properties`` = its ``data`` (an object; data that is
  not one is wrapped as ``{"data": ...}``);
- ``anonymousId`` = ``data.call_sid`` (the call is the subject; there is no user), or the
  CloudEvent id for events of no call such as the Sink Test event;
- ``messageId`` = the CloudEvent id, which Segment de-duplicates on, so a redelivery after a
  retry is not counted twice; ``timestamp`` = the CloudEvent ``time``.

Requests go to ``<segment_base_url>/v1/batch`` with the sink's write key as the HTTP Basic
username and an empty password. Segment takes at most 32 KB per call and 500 KB per batch
request; like Segment's own libraries, callstream keeps a message within 32 KiB and a
request body within 475,000 bytes (headroom under the limit), splits larger requests, and
refuses (does not retry) a single event that can never fit.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import aiohttp
import msgspec

from callstream.sinks.drivers import Outcome, failure_outcome, status_outcome
from callstream.sinks.envelope import Envelope, read_envelope
from callstream.store.control import Sink

DEFAULT_BASE_URL = "https://api.segment.io"
DEFAULT_TIMEOUT = 5.0
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 475_000
USER_AGENT = "callstream-event-streams/1"

_OPEN = b'{"batch":['
_CLOSE = b"]}"


class Track(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One Segment track call, in the batch API's field names."""

    type: str = "track"
    event: str
    properties: msgspec.Raw
    anonymous_id: str
    message_id: str
    timestamp: str | None = None


_encoder = msgspec.json.Encoder()


def track(envelope: Envelope) -> bytes:
    """The track call for one CloudEvent, as compact JSON."""
    properties = envelope.data
    if not envelope.data_is_object:
        properties = msgspec.Raw(b'{"data":' + bytes(envelope.data) + b"}")
    return _encoder.encode(
        Track(
            event=envelope.type,
            properties=properties,
            anonymous_id=envelope.subject,
            message_id=envelope.id,
            timestamp=envelope.time,
        )
    )


def basic_auth(write_key: str) -> str:
    """Segment's authorization: the write key as the Basic username, no password."""
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode("ascii")


def batch_bodies(messages: Sequence[tuple[int, bytes]]) -> list[tuple[list[int], bytes]]:
    """``messages`` (index, track JSON) in order, cut into batch request bodies of at most
    ``MAX_BATCH_BYTES``; each with the indices it carries."""
    bodies: list[tuple[list[int], bytes]] = []
    indices: list[int] = []
    parts: list[bytes] = []
    size = len(_OPEN) + len(_CLOSE)
    for index, message in messages:
        extra = len(message) + (1 if parts else 0)  # the comma before it
        if parts and size + extra > MAX_BATCH_BYTES:
            bodies.append((indices, _OPEN + b",".join(parts) + _CLOSE))
            indices, parts, size = [], [], len(_OPEN) + len(_CLOSE)
            extra = len(message)
        indices.append(index)
        parts.append(message)
        size += extra
    if parts:
        bodies.append((indices, _OPEN + b",".join(parts) + _CLOSE))
    return bodies


class SegmentDriver:
    """The ``SinkDriver`` for ``segment`` sinks: one pooled aiohttp session for all of them."""

    def __init__(self, *, base_url: str = DEFAULT_BASE_URL, timeout: float = DEFAULT_TIMEOUT):
        self._url = base_url.rstrip("/") + "/v1/batch"
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, sink: Sink, auth_token: str, events: Sequence[bytes]) -> Outcome:
        """The ``SinkDriver`` entry point (``auth_token`` is not used by Segment)."""
        write_key = str(sink.configuration.get("write_key", ""))
        messages: list[tuple[int, bytes]] = []
        refused: list[str] = []
        for index, body in enumerate(events):
            try:
                message = track(read_envelope(body))
            except msgspec.DecodeError:
                refused.append(f"event {index} is not a CloudEvent")
                continue
            if len(message) > MAX_MESSAGE_BYTES:
                refused.append(
                    f"event {index} is {len(message)} bytes as a Segment call; "
                    f"Segment takes at most {MAX_MESSAGE_BYTES}"
                )
                continue
            messages.append((index, message))

        delivered: list[int] = []
        failure: Outcome | None = None
        for indices, body in batch_bodies(messages):
            outcome = await self._post(write_key, body)
            if outcome.ok:
                delivered += indices
                continue
            failure = outcome
            if outcome.retry:
                break  # Segment is in trouble: the rest waits for the worker's retry
            refused.append(outcome.error or "refused")
        if failure is None and not refused:
            return Outcome(ok=True, retry=False, status=200)
        retry = failure is not None and failure.retry
        errors = [failure.error] if retry and failure is not None and failure.error else []
        if refused:
            errors.append("refused without retry: " + "; ".join(refused))
        return Outcome(
            ok=False,
            retry=retry,
            status=failure.status if failure is not None else None,
            error=" | ".join(errors),
            delivered=tuple(delivered),
        )

    async def _post(self, write_key: str, body: bytes) -> Outcome:
        try:
            async with self._get_session().post(
                self._url,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "Authorization": basic_auth(write_key),
                },
                allow_redirects=False,
            ) as response:
                await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return failure_outcome(exc, self._timeout)
        return status_outcome(status)
