"""Media-gateway telemetry: call-progress events and 10-second stream metrics.

Each gateway event becomes one ``call-event.gateway`` and may establish call facts (parties,
state, times, SIP outcome); each gateway metric becomes one ``call-metrics.gateway`` record
and adds to its stream's totals, which feed the record's ``cumulative`` and the summary.

Metric records are a third of all telemetry and are handled once each, so their path builds
only what the emitted record needs. The call facts are kept encoded in the state
(``GatewayState.facts``): only gateway events and summaries read them, and the state is
decoded and encoded on every step of the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from operator import attrgetter
from typing import Final, TypeAlias

import msgspec

from callstream.insights.aggregates import Acc, Stamped, newer, newer_encoded
from callstream.insights.codecs import codec_name
from callstream.model import insights as out
from callstream.model.telemetry import GatewayEvent, GatewayMetric
from callstream.model.telemetry import GatewayMetadata as SensorMetadata

__all__ = [
    "GatewayEdgeState",
    "GatewayFacts",
    "GatewayState",
    "StreamTotals",
    "decode_party",
    "edge_metadata",
    "gateway_event",
    "gateway_metric",
    "is_terminal",
    "load_facts",
    "loss_percentage",
    "store_facts",
]

# Progress names (Twilio's status callback values) and the call state each one implies.
_NAME_STATES: Final[Mapping[str, out.CallState]] = {
    "ringing": "ringing",
    "answered": "answered",
    "in-progress": "answered",
    "completed": "completed",
    "busy": "busy",
    "no-answer": "noanswer",
    "noanswer": "noanswer",
    "failed": "fail",
    "fail": "fail",
    "canceled": "canceled",
    "cancelled": "canceled",
}
TERMINAL_NAMES: Final = frozenset(
    name for name, state in _NAME_STATES.items() if state not in ("ringing", "answered")
)
TERMINAL_STATES: Final = frozenset({"completed", "busy", "fail", "noanswer", "canceled"})
ANSWER_NAMES: Final = frozenset({"answered", "in-progress"})

# A terminal state outranks answered, which outranks ringing, whatever the timestamps say:
# a late "ringing" with a skewed clock must not reopen a completed call.
_STATE_RANK: Final = {"ringing": 0, "answered": 1}
_TERMINAL_RANK: Final = 2

MetadataValues: TypeAlias = tuple[str | None, str | None, str | None, str | None]
"""A gateway's metadata as the state keeps it: ``out.GatewayMetadata``'s members, in order."""
_METADATA_VALUES: Final = attrgetter("region", "twilio_ip", "external_ip", "edge_location")

# Facts copied as they are from the gateway event that reports them (the parties are kept
# encoded, see GatewayFacts).
_PLAIN_FACTS: Final = (
    "call_type",
    "direction",
    "sip_response_code",
    "q850_cause",
    "disconnected_by",
    "answered_by",
    "pdd_ms",
    "queue_time",
    "parent_call_sid",
)
_TIME_FACTS: Final = ("created_time", "start_time", "end_time")


class GatewayFacts(msgspec.Struct, array_like=True, gc=False):
    """Call facts, each with the timestamp of the event that reported it (latest wins).

    The parties are kept as their msgpack encoding: equal timestamps are ordered by the
    encoded value anyway, and only a summary needs them decoded (``decode_party``).
    """

    from_: Stamped[bytes] | None = None
    to: Stamped[bytes] | None = None
    call_type: Stamped[out.CallType] | None = None
    direction: Stamped[out.CallDirection] | None = None
    sip_response_code: Stamped[int] | None = None
    q850_cause: Stamped[int] | None = None
    disconnected_by: Stamped[out.DisconnectedBy] | None = None
    answered_by: Stamped[out.AnsweredBy] | None = None
    pdd_ms: Stamped[int] | None = None
    queue_time: Stamped[int] | None = None
    parent_call_sid: Stamped[str] | None = None
    created_time: Stamped[float] | None = None
    start_time: Stamped[float] | None = None
    end_time: Stamped[float] | None = None
    # (rank, timestamp, state): see _STATE_RANK.
    call_state: tuple[int, float, out.CallState] | None = None


class StreamTotals(msgspec.Struct, array_like=True, gc=False):
    """One direction of one gateway edge, summed over every metric record received."""

    intervals: int = 0
    packets: int = 0
    lost: int = 0
    jitter: Acc = msgspec.field(default_factory=Acc)
    latency: Acc = msgspec.field(default_factory=Acc)
    delay_variation: dict[str, int] = {}
    codec: Stamped[tuple[int, str]] | None = None
    """Payload type and lower-case name from the latest record."""
    # The largest running totals the gateway reported itself (it may count packets whose
    # metric records never reached us).
    reported_packets: int = 0
    reported_lost: int = 0

    @property
    def packet_count(self) -> int:
        return max(self.packets, self.reported_packets)

    @property
    def lost_count(self) -> int:
        return max(self.lost, self.reported_lost)


class GatewayEdgeState(msgspec.Struct, array_like=True, gc=False):
    metadata: Stamped[MetadataValues] | None = None
    """The latest metadata (``edge_metadata``): every metric record replaces it, and only a
    summary reads it."""
    disconnected_by: Stamped[out.DisconnectedBy] | None = None
    terminal: bool = False
    inbound: StreamTotals | None = None
    outbound: StreamTotals | None = None


class GatewayState(msgspec.Struct, array_like=True, gc=False):
    facts: bytes = b""
    """The encoded ``GatewayFacts`` (``load_facts`` / ``store_facts``); empty when none."""
    edges: dict[str, GatewayEdgeState] = {}
    first_event: float | None = None
    ringing: float | None = None
    answered: float | None = None
    terminal: float | None = None

    def edge(self, name: str) -> GatewayEdgeState:
        found = self.edges.get(name)
        if found is None:
            found = self.edges[name] = GatewayEdgeState()
        return found


_encoder: Final = msgspec.msgpack.Encoder()
_facts_decoder: Final = msgspec.msgpack.Decoder(GatewayFacts)
_party_decoder: Final = msgspec.msgpack.Decoder(out.CallParty)


def load_facts(state: GatewayState) -> GatewayFacts:
    """The call facts, decoded; hand them back with ``store_facts`` after changing them."""
    return _facts_decoder.decode(state.facts) if state.facts else GatewayFacts()


def store_facts(state: GatewayState, facts: GatewayFacts) -> None:
    state.facts = _encoder.encode(facts)


def edge_metadata(edge: GatewayEdgeState) -> out.GatewayMetadata:
    """The edge's latest metadata (all unknown when none was reported)."""
    if edge.metadata is None:
        return out.GatewayMetadata()
    region, twilio_ip, external_ip, edge_location = edge.metadata[1]
    return out.GatewayMetadata(
        region=region, twilio_ip=twilio_ip, external_ip=external_ip, edge_location=edge_location
    )


def decode_party(encoded: bytes) -> out.CallParty:
    """A party as a summary shows it, from a telemetry ``Party``'s encoding.

    ``CallParty`` has every member of ``Party`` under the same name (plus ``sdk``, which a
    gateway never reports), so decoding the one's encoding as the other converts it.
    """
    return _party_decoder.decode(encoded)


def is_terminal(record: GatewayEvent) -> bool:
    """Whether the event says the call is over."""
    return (
        record.name.lower() in TERMINAL_NAMES
        or record.call_state in TERMINAL_STATES
        or record.end_time is not None
    )


def loss_percentage(lost: int | None, count: int | None) -> float | None:
    """Lost packets as a percentage of the packets that were due (``count`` + ``lost``)."""
    if lost is None or count is None or count + lost == 0:
        return None
    if lost == 0 and count > 0:
        return 0.0  # what the rounding below gives, without its cost: most intervals lose none
    return round(lost / (count + lost) * 100, 4)


def gateway_event(
    state: GatewayState,
    facts: GatewayFacts,
    record: GatewayEvent,
    account_sid: str,
    seq: int,
) -> out.CallEvent:
    """Record the event's facts (in ``facts``, loaded by the caller) and return its call
    event."""
    ts = record.timestamp.timestamp()
    edge = state.edge(record.edge)
    metadata = _metadata(record.metadata)
    if record.metadata is not None:
        _note_metadata(edge, ts, record.metadata)
    if record.disconnected_by is not None and newer(
        edge.disconnected_by, ts, record.disconnected_by
    ):
        edge.disconnected_by = (ts, record.disconnected_by)
    _note_progress(state, edge, record, ts)
    _note_facts(facts, record, ts)
    return out.CallEvent(
        account_sid=account_sid,
        call_sid=record.call_sid,
        time=record.timestamp,
        seq=seq,
        edge=record.edge,
        group=record.group,
        name=record.name,
        level=record.level,
        gateway=out.GatewayEventData(metadata=metadata),
    )


def _note_metadata(edge: GatewayEdgeState, ts: float, metadata: SensorMetadata) -> None:
    current = edge.metadata
    if current is not None and ts < current[0]:
        return
    # Equal stamps are ordered by the encoded out.GatewayMetadata, as ``newer`` orders them.
    if (
        current is None
        or ts > current[0]
        or _encoder.encode(_metadata(metadata)) > (_encoder.encode(edge_metadata(edge)))
    ):
        edge.metadata = (ts, _METADATA_VALUES(metadata))


def _note_progress(
    state: GatewayState, edge: GatewayEdgeState, record: GatewayEvent, ts: float
) -> None:
    state.first_event = _min(state.first_event, ts)
    name = record.name.lower()
    if name == "ringing" or record.call_state == "ringing":
        state.ringing = _min(state.ringing, ts)
    if name in ANSWER_NAMES or record.call_state == "answered":
        state.answered = _min(state.answered, ts)
    if is_terminal(record):
        edge.terminal = True
        state.terminal = ts if state.terminal is None else max(state.terminal, ts)


def _note_facts(facts: GatewayFacts, record: GatewayEvent, ts: float) -> None:
    for name, party in (("from_", record.from_), ("to", record.to)):
        if party is not None:
            encoded = _encoder.encode(party)
            if newer_encoded(getattr(facts, name), ts, encoded):
                setattr(facts, name, (ts, encoded))
    for name in _PLAIN_FACTS:
        value = getattr(record, name)
        if value is not None and newer(getattr(facts, name), ts, value):
            setattr(facts, name, (ts, value))
    for name in _TIME_FACTS:
        moment = getattr(record, name)
        if moment is not None:
            value = moment.timestamp()
            if newer(getattr(facts, name), ts, value):
                setattr(facts, name, (ts, value))
    call_state = record.call_state or _NAME_STATES.get(record.name.lower())
    if call_state is not None:
        rank = _STATE_RANK.get(call_state, _TERMINAL_RANK)
        candidate = (rank, ts, call_state)
        if facts.call_state is None or candidate > facts.call_state:
            facts.call_state = candidate


def gateway_metric(state: GatewayState, record: GatewayMetric, account_sid: str) -> out.CallMetric:
    """Add the record to its stream's totals and return its metric record.

    A third of all telemetry comes this way, once each: the steps are written out in one
    function, as a call per step would cost more than most steps do.
    """
    ts = record.timestamp.timestamp()
    edge = state.edges.get(record.edge) or state.edge(record.edge)
    sensor_metadata = record.metadata
    metadata = None
    if sensor_metadata is not None:
        metadata = _metadata(sensor_metadata)
        current = edge.metadata
        if current is None or ts > current[0]:
            edge.metadata = (ts, _METADATA_VALUES(sensor_metadata))
        elif ts == current[0]:
            _note_metadata(edge, ts, sensor_metadata)
    inbound = record.direction == "inbound"
    if inbound:
        totals = edge.inbound
        if totals is None:
            totals = edge.inbound = StreamTotals()
        count = record.packets_received
    else:
        totals = edge.outbound
        if totals is None:
            totals = edge.outbound = StreamTotals()
        count = record.packets_sent
    name = record.codec_name.lower() if record.codec_name else codec_name(record.codec)
    jitter = record.jitter
    latency = record.latency
    lost = record.packets_lost
    reported = record.cumulative

    # The stream's totals.
    totals.intervals += 1
    totals.packets += count or 0
    totals.lost += lost
    if jitter is not None:
        totals.jitter.add(jitter.avg, jitter.max)
    if latency is not None:
        totals.latency.add(latency.avg, latency.max)
    delays = record.packet_delay_variation
    if delays:
        known = totals.delay_variation
        for bucket, delay in delays.items():
            if delay > known.get(bucket, -1):
                known[bucket] = delay
    codec = (record.codec, name or "")
    current_codec = totals.codec
    if current_codec is None or ts > current_codec[0] or newer(current_codec, ts, codec):
        totals.codec = (ts, codec)
    if reported is not None:
        reported_count = reported.packets_received if inbound else reported.packets_sent
        if reported_count and reported_count > totals.reported_packets:
            totals.reported_packets = reported_count
        if reported.packets_lost and reported.packets_lost > totals.reported_lost:
            totals.reported_lost = reported.packets_lost
        if reported.jitter is not None:
            totals.jitter.add_max(reported.jitter.max)

    # Cumulative: the running totals as of this record, where what the gateway reported
    # itself takes precedence.
    running_count: int | None = totals.packets
    running_lost: int | None = totals.lost
    running_jitter: out.MetricStats | None
    if reported is not None and reported.jitter is not None:
        running_jitter = out.MetricStats(avg=reported.jitter.avg, max=reported.jitter.max)
    else:
        running_jitter = totals.jitter.stats(3, with_min=False)
    if reported is not None:
        own = reported.packets_received if inbound else reported.packets_sent
        if own is not None:
            running_count = own
        if reported.packets_lost is not None:
            running_lost = reported.packets_lost

    return out.CallMetric(
        account_sid=account_sid,
        call_sid=record.call_sid,
        time=record.timestamp,
        window_start=record.timestamp
        - (_TEN_SECONDS if record.interval_seconds == 10.0 else _interval(record)),
        edge=record.edge,
        direction=record.direction,
        codec=record.codec,
        codec_name=name,
        interval=out.Metrics(
            packets_received=record.packets_received,
            packets_sent=record.packets_sent,
            packets_lost=lost,
            packets_loss_percentage=loss_percentage(lost, count),
            jitter=None
            if jitter is None
            else out.MetricStats(min=jitter.min, max=jitter.max, avg=jitter.avg),
            latency=None
            if latency is None
            else out.MetricStats(min=latency.min, max=latency.max, avg=latency.avg),
            packet_delay_variation=delays,
        ),
        cumulative=out.Metrics(
            packets_received=running_count if inbound else None,
            packets_sent=None if inbound else running_count,
            packets_lost=running_lost,
            packets_loss_percentage=loss_percentage(running_lost, running_count),
            jitter=running_jitter,
        ),
        gateway_metadata=metadata,
    )


# Nearly every record has the standard 10 s; building a timedelta costs more than a check.
_TEN_SECONDS: Final = timedelta(seconds=10)


def _interval(record: GatewayMetric) -> timedelta:
    return timedelta(seconds=record.interval_seconds)


def _metadata(metadata: SensorMetadata | None) -> out.GatewayMetadata | None:
    if metadata is None:
        return None
    return out.GatewayMetadata(
        region=metadata.region,
        twilio_ip=metadata.twilio_ip,
        external_ip=metadata.external_ip,
        edge_location=metadata.edge_location,
    )


def _min(current: float | None, value: float) -> float:
    return value if current is None or value < current else current
