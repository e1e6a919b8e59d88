"""The CloudEvents 1.0 envelope that carries every event to a sink.

The envelope is Twilio's (event-streams-api.md §2.1): ``specversion``, ``type``,
``source``, ``id``, ``dataschema``, ``datacontenttype``, ``time`` and ``data``,
with ``data`` a JSON object rendered in the schema version a subscription chose.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import msgspec

from callstream.model.catalogue import catalogue
from callstream.model.insights import InsightEvent
from callstream.schemas.render import render

DEFAULT_SCHEMA_BASE_URL = "https://events-schemas.twilio.com"


class CloudEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event as a sink receives it; field order is Twilio's."""

    specversion: str = "1.0"
    type: str
    source: str
    id: str
    dataschema: str
    datacontenttype: str = "application/json"
    time: str
    data: dict[str, Any]


def event_id(
    *, account_sid: str, call_sid: str | None, event_type: str, identity: str, schema_version: int
) -> str:
    """A deterministic ``EZ`` + 32 hex id for one occurrence in one schema version.

    The same event produced again (after a crash, on replay) gets the same id, so
    receivers can drop duplicates on it. The schema version is part of the id
    because two renderings of one occurrence are two distinct CloudEvents
    (docs/decisions/0001-event-ids.md).
    """
    key = "\x1f".join((account_sid, call_sid or "", event_type, identity, str(schema_version)))
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=16).hexdigest()
    return f"EZ{digest}"


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``, as Twilio writes ``time``."""
    if moment.tzinfo is None:
        raise ValueError("event times must be timezone-aware")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def to_cloudevent(
    event: InsightEvent,
    schema_version: int | None = None,
    *,
    schema_base_url: str = DEFAULT_SCHEMA_BASE_URL,
) -> CloudEvent:
    """Wrap ``event``, rendered in ``schema_version`` (latest when None)."""
    event_type = catalogue().event_type(event.event_type)
    schema = catalogue().schema(event_type.schema_id)
    version = catalogue().resolve_version(event_type.type, schema_version)
    return CloudEvent(
        type=event_type.type,
        source=event_type.source_for(call_sid=event.call_sid or ""),
        id=event_id(
            account_sid=event.account_sid,
            call_sid=event.call_sid,
            event_type=event_type.type,
            identity=event.identity,
            schema_version=version,
        ),
        dataschema=schema.dataschema(version, schema_base_url),
        time=format_time(event.time),
        data=render(event, version),
    )


_encoder = msgspec.json.Encoder()


def encode_batch(events: list[CloudEvent]) -> bytes:
    """Compact JSON array of events: the body of a webhook request."""
    return _encoder.encode(events)
