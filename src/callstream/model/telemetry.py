"""Telemetry records: what voice platforms send callstream about their calls.

Four record kinds share one wire format, told apart by their ``kind`` member, so that a mixed
batch (a JSON array or NDJSON) is decoded and validated in a single msgspec pass:

* ``gateway_event``  — call progress seen by a media gateway (carrier, SIP or Client edge);
* ``gateway_metric`` — a gateway's 10-second media sample for one direction of one edge;
* ``sdk_event``      — an event a Voice SDK publishes (the twilio-voice.js shape);
* ``sdk_sample``     — one 1-second WebRTC stats sample an SDK collects.

Records carry no account: the ingest API takes the account from the request's credentials.
Every string, list and map is bounded here so a single record cannot grow without limit; how
many records one request may carry is the ingest API's decision.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, NamedTuple

import msgspec
from msgspec import Meta

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "MAX_PAYLOAD_KEYS",
    "MAX_TEXT_LENGTH",
    "Browser",
    "DeviceInfo",
    "GatewayCumulative",
    "GatewayEvent",
    "GatewayMetadata",
    "GatewayMetric",
    "Location",
    "MillisStats",
    "OsInfo",
    "Party",
    "PublisherMetadata",
    "SdkEvent",
    "SdkSample",
    "TelemetryError",
    "TelemetryIssue",
    "TelemetryRecord",
    "decode_batch",
    "decode_ndjson",
    "encode_batch",
    "encode_ndjson",
    "encode_record",
    "json_schema",
    "json_schema_bytes",
]

MAX_ID_LENGTH: Final = 128
MAX_NAME_LENGTH: Final = 64
MAX_TEXT_LENGTH: Final = 256
MAX_PAYLOAD_KEYS: Final = 64
MAX_PAYLOAD_BYTES: Final = 16_384
_MAX_COUNT: Final = 2**53 - 1  # the largest integer every JSON client reads exactly
_MAX_MILLIS: Final = 3_600_000.0

# --- constrained scalar types -------------------------------------------------------------------

RecordId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=r"^[!-~]+$",
        description="Idempotency id chosen by the sender, unique within the account: printable "
        "ASCII, no spaces. A record sent again with the same id is accepted once.",
    ),
]
CallSid = Annotated[str, Meta(pattern=r"^CA[0-9a-fA-F]{32}$", description="CA + 32 hex digits")]
UtcTime = Annotated[
    datetime,
    Meta(tz=True, description="RFC 3339 date-time with a UTC offset; stored as UTC"),
]
Name = Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
Text = Annotated[str, Meta(max_length=MAX_TEXT_LENGTH)]
Count = Annotated[int, Meta(ge=0, le=_MAX_COUNT)]
Millis = Annotated[float, Meta(ge=0, le=_MAX_MILLIS, description="milliseconds")]
Percent = Annotated[float, Meta(ge=0, le=100)]
AudioLevel = Annotated[float, Meta(ge=0, le=32767, description="0..32767 (-100..-30 dB)")]
Volume = Annotated[float, Meta(ge=0, le=1)]
CountryCode = Annotated[str, Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
Mos = Annotated[float, Meta(ge=1, le=5)]

Level = Literal["UNKNOWN", "DEBUG", "INFO", "WARNING", "ERROR"]
GatewayEdge = Literal["carrier_edge", "sip_edge", "client_edge"]
CallType = Literal["carrier", "sip", "trunking", "client"]
CallDirection = Literal[
    "inbound", "outbound_api", "outbound_dial", "trunking_originating", "trunking_terminating"
]
CallState = Literal["ringing", "answered", "completed", "busy", "fail", "noanswer", "canceled"]
AnsweredBy = Literal[
    "unknown",
    "machine_start",
    "machine_end_beep",
    "machine_end_silence",
    "machine_end_other",
    "human",
    "fax",
]
PayloadKey = Annotated[str, Meta(max_length=MAX_NAME_LENGTH)]
DelayBucket = Annotated[str, Meta(pattern=r"^d[0-9]{1,3}$", description="e.g. d50, d90")]


class _Nested(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Base of the small objects records contain."""


class Location(_Nested, frozen=True, kw_only=True):
    lat: Annotated[float, Meta(ge=-90, le=90)]
    lon: Annotated[float, Meta(ge=-180, le=180)]


class Party(_Nested, frozen=True, kw_only=True):
    """One end of a call, as the Call Summary's ``from`` / ``to`` objects describe it.

    The calling end puts its number, SIP URI or ``client:identity`` in ``caller``; the called end
    in ``callee``.
    """

    caller: Text | None = None
    callee: Text | None = None
    carrier: Text | None = None
    connection: Annotated[str, Meta(max_length=MAX_NAME_LENGTH, examples=["mobile"])] | None = None
    number_prefix: Annotated[str, Meta(pattern=r"^[0-9]{1,8}$")] | None = None
    location: Location | None = None
    city: Text | None = None
    country_code: CountryCode | None = None
    country_subdivision: Text | None = None
    ip_address: Annotated[str, Meta(max_length=45)] | None = None


class GatewayMetadata(_Nested, frozen=True, kw_only=True):
    region: Name | None = None
    twilio_ip: Annotated[str, Meta(max_length=45)] | None = None
    external_ip: Annotated[str, Meta(max_length=45)] | None = None
    edge_location: Name | None = None


class MillisStats(_Nested, frozen=True, kw_only=True):
    """Average and maximum (optionally minimum) of a millisecond measure over an interval."""

    avg: Millis
    max: Millis
    min: Millis | None = None


class GatewayCumulative(_Nested, frozen=True, kw_only=True):
    """Running totals since the stream started, where the gateway keeps them."""

    packets_received: Count | None = None
    packets_sent: Count | None = None
    packets_lost: Count | None = None
    jitter: MillisStats | None = None


class PublisherMetadata(_Nested, frozen=True, kw_only=True):
    app_name: Text | None = None
    app_version: Text | None = None


class Browser(_Nested, frozen=True, kw_only=True):
    name: Text = ""
    major: Text = ""
    version: Text = ""


class OsInfo(_Nested, frozen=True, kw_only=True):
    name: Text = ""
    version: Text = ""


class DeviceInfo(_Nested, frozen=True, kw_only=True):
    model: Text = ""
    type: Text = ""
    vendor: Text = ""
    arch: Text = ""


# --- records ------------------------------------------------------------------------------------


class _Record(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    omit_defaults=True,
    tag_field="kind",
):
    id: RecordId
    call_sid: CallSid
    timestamp: UtcTime

    def __post_init__(self) -> None:
        # Senders may use any UTC offset; downstream code compares and renders plain UTC.
        if self.timestamp.tzinfo is not UTC:
            msgspec.structs.force_setattr(self, "timestamp", self.timestamp.astimezone(UTC))


class GatewayEvent(_Record, tag="gateway_event", frozen=True, kw_only=True):
    """A call-progress event from a media gateway.

    Progress names mirror Twilio's status callbacks (initiated, ringing, answered, completed);
    the call facts below are set on the event that establishes them and may be repeated later.
    """

    edge: GatewayEdge
    name: Name
    group: Name = "connection"
    level: Level = "INFO"
    from_: Party | None = msgspec.field(default=None, name="from")
    to: Party | None = None
    call_type: CallType | None = None
    direction: CallDirection | None = None
    call_state: CallState | None = None
    sip_response_code: Annotated[int, Meta(ge=100, le=699)] | None = None
    q850_cause: Annotated[int, Meta(ge=0, le=127)] | None = None
    disconnected_by: Literal["caller", "callee"] | None = None
    answered_by: AnsweredBy | None = None
    pdd_ms: Annotated[int, Meta(ge=0, le=600_000)] | None = None
    queue_time: Annotated[int, Meta(ge=0, le=86_400_000, description="ms")] | None = None
    metadata: GatewayMetadata | None = None
    parent_call_sid: CallSid | None = None
    created_time: UtcTime | None = None
    start_time: UtcTime | None = None
    end_time: UtcTime | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("created_time", "start_time", "end_time"):
            value = getattr(self, field)
            if value is not None and value.tzinfo is not UTC:
                msgspec.structs.force_setattr(self, field, value.astimezone(UTC))


class GatewayMetric(_Record, tag="gateway_metric", frozen=True, kw_only=True):
    """One direction of one gateway edge over the interval that ends at ``timestamp``.

    Gateways send one per edge and direction every 10 s; counts are for the interval only.
    ``inbound`` streams carry ``packets_received``, ``outbound`` streams ``packets_sent``.
    """

    edge: GatewayEdge
    direction: Literal["inbound", "outbound"]
    codec: Annotated[int, Meta(ge=0, le=127, description="RTP payload type")]
    codec_name: Name | None = None
    interval_seconds: Annotated[float, Meta(gt=0, le=60)] = 10.0
    packets_received: Count | None = None
    packets_sent: Count | None = None
    packets_lost: Count = 0
    jitter: MillisStats | None = None
    latency: MillisStats | None = None
    packet_delay_variation: Annotated[dict[DelayBucket, Count], Meta(max_length=16)] | None = None
    cumulative: GatewayCumulative | None = None
    metadata: GatewayMetadata | None = None


class SdkEvent(_Record, tag="sdk_event", frozen=True, kw_only=True):
    """An event as a Voice SDK publishes it (twilio-voice.js ``EventPublisher`` shape).

    The SDK merges a default payload into every event; its well-known members are lifted to
    typed fields here, the event-specific rest stays in ``payload``.
    """

    group: Name
    name: Name
    level: Level
    payload: Annotated[dict[PayloadKey, Any], Meta(max_length=MAX_PAYLOAD_KEYS)] | None = None
    payload_type: Literal["application/json"] = "application/json"
    private: bool = False
    publisher: Name = "twilio-js-sdk"
    publisher_metadata: PublisherMetadata | None = None
    sdk_version: Name | None = None
    platform: Name | None = None
    direction: Literal["INCOMING", "OUTGOING"] | None = None
    gateway: Text | None = None
    region: Name | None = None
    client_name: Text | None = None
    audio_codec: Name | None = None
    dscp: bool | None = None
    ice_restart_enabled: bool | None = None
    aggressive_nomination: bool | None = None
    browser_extension: bool | None = None
    temp_call_sid: Name | None = None
    browser: Browser | None = None
    os: OsInfo | None = None
    device: DeviceInfo | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        # Key count alone does not bound nested values; the encoded size does.
        if self.payload and len(_ENCODER.encode(self.payload)) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"`payload` is larger than {MAX_PAYLOAD_BYTES} bytes")


class SdkSample(_Record, tag="sdk_sample", frozen=True, kw_only=True):
    """One 1-second WebRTC stats sample, as twilio-voice.js's StatsMonitor builds it.

    Per-second members are deltas against the previous sample; ``total_*`` are running totals.
    ``mos`` is null on a call's first sample, which has no previous one to take a loss from.
    """

    audio_codec: Name
    audio_level_in: AudioLevel
    audio_level_out: AudioLevel
    bytes_received: Count
    bytes_sent: Count
    call_volume_input: Volume
    call_volume_output: Volume
    jitter: Millis
    mos: Mos | None
    packets_lost: Count
    packets_lost_fraction: Percent
    packets_received: Count
    rtt: Millis | None
    total_bytes_received: Count
    total_bytes_sent: Count
    total_packets_lost: Count
    total_packets_received: Count
    total_packets_sent: Count
    packets_sent: Count | None = None
    sdk_version: Name | None = None
    direction: Literal["INCOMING", "OUTGOING"] | None = None
    gateway: Text | None = None


TelemetryRecord = GatewayEvent | GatewayMetric | SdkEvent | SdkSample
"""Any telemetry record; ``kind`` selects the variant."""

_ENCODER: Final = msgspec.json.Encoder()
_BATCH_DECODER: Final = msgspec.json.Decoder(list[TelemetryRecord])
_RECORD_DECODER: Final = msgspec.json.Decoder(TelemetryRecord)
_RAW_ARRAY_DECODER: Final = msgspec.json.Decoder(list[msgspec.Raw])


# --- errors -------------------------------------------------------------------------------------


class TelemetryIssue(NamedTuple):
    """One reason a batch was refused.

    ``record_index`` is the record's position in the batch (counting non-blank lines for
    NDJSON), or None when the batch as a whole is unreadable; ``field`` is a dotted path such
    as ``jitter.avg`` or ``payload`` ("" for the record itself).
    """

    record_index: int | None
    field: str
    reason: str


class TelemetryError(ValueError):
    """A batch held records that are not valid telemetry; ``errors`` names each one."""

    def __init__(self, errors: Sequence[TelemetryIssue]) -> None:
        self.errors: list[TelemetryIssue] = list(errors)
        first = self.errors[0] if self.errors else TelemetryIssue(None, "", "invalid telemetry")
        where = "batch" if first.record_index is None else f"record {first.record_index}"
        field = f" field {first.field!r}" if first.field else ""
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        super().__init__(f"{where}{field}: {first.reason}{more}")


_AT_PATH = re.compile(
    r"^(?P<reason>.*?)(?: - at (?P<key>`key` in )?`(?P<path>[^`]*)`)?$", re.DOTALL
)
# Errors msgspec reports at the enclosing object, and ours from __post_init__, name the
# field in backticks; the issue points at that field instead.
_NAMED_FIELD = re.compile(r"(?:(?:missing required|unknown) field |^)`(?P<name>[^`]+)`")


def _issue(index: int | None, exc: msgspec.DecodeError) -> TelemetryIssue:
    match = _AT_PATH.match(str(exc))
    assert match is not None  # the pattern matches any string
    reason = match["reason"]
    if match["key"]:
        reason = f"{reason} (in a key)"
    path = (match["path"] or "$").removeprefix("$").removeprefix(".")
    named = _NAMED_FIELD.search(reason)
    if named:
        path = f"{path}.{named['name']}" if path else named["name"]
    return TelemetryIssue(index, path, reason)


def _decode_each(items: Iterable[bytes | msgspec.Raw]) -> list[TelemetryRecord]:
    records: list[TelemetryRecord] = []
    issues: list[TelemetryIssue] = []
    for index, item in enumerate(items):
        try:
            records.append(_RECORD_DECODER.decode(item))
        except msgspec.DecodeError as exc:
            issues.append(_issue(index, exc))
    if issues:
        raise TelemetryError(issues)
    return records


def decode_batch(raw: bytes) -> list[TelemetryRecord]:
    """Decode a JSON array of records; raise TelemetryError naming every bad record."""
    try:
        return _BATCH_DECODER.decode(raw)
    except msgspec.DecodeError:
        pass  # find every bad record below, not just the first one
    try:
        items = _RAW_ARRAY_DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise TelemetryError([_issue(None, exc)]) from None
    return _decode_each(items)


def decode_ndjson(raw: bytes) -> list[TelemetryRecord]:
    """Decode newline-delimited JSON records (blank lines ignored); errors as decode_batch."""
    try:
        return _RECORD_DECODER.decode_lines(raw)
    except msgspec.DecodeError:
        pass
    return _decode_each(line for line in raw.splitlines() if line.strip())


# --- encoding -----------------------------------------------------------------------------------


def encode_record(record: TelemetryRecord) -> bytes:
    """One record as compact JSON (members equal to their default are left out)."""
    return _ENCODER.encode(record)


def encode_batch(records: Iterable[TelemetryRecord]) -> bytes:
    """Records as one JSON array."""
    return _ENCODER.encode(records if isinstance(records, list) else list(records))


def encode_ndjson(records: Iterable[TelemetryRecord]) -> bytes:
    """Records as newline-delimited JSON, one per line, each line ending in a newline."""
    return _ENCODER.encode_lines(records if isinstance(records, list) else list(records))


# --- JSON Schema --------------------------------------------------------------------------------


def json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of one telemetry record, generated from the structs."""
    return msgspec.json.schema(TelemetryRecord)


def json_schema_bytes() -> bytes:
    """The schema as committed in docs/ingest.schema.json: indented, keys sorted, newline."""
    return msgspec.json.format(_SORTED_ENCODER.encode(json_schema()), indent=2) + b"\n"


_SORTED_ENCODER: Final = msgspec.json.Encoder(order="sorted")


if __name__ == "__main__":
    import sys

    sys.stdout.buffer.write(json_schema_bytes())
