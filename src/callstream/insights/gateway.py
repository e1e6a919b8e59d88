"""Media-gateway telemetry: call-progress events and 10-second stream metrics.

Each gateway event becomes one ``call-event.gateway`` and may establish call facts (parties,
state, times, SIP outcome); each gateway metric becomes one ``call-metrics.gateway`` record
and adds to its stream's totals, which feed the record's ``cumulative`` and the summary.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import msgspec

from callstream.insights.aggregates import Acc, Stamped, newer
from callstream.insights.codecs import codec_name
from callstream.model import insights as out
from callstream.model.telemetry import GatewayEvent, GatewayMetric, MillisStats, Party
from callstream.model.telemetry import GatewayMetadata as SensorMetadata

__all__ = [
    "GatewayEdgeState",
    "GatewayFacts",
    "GatewayState",
    "StreamTotals",
    "gateway_event",
    "gateway_metric",
    "is_terminal",
    "loss_percentage",
]

# Progress names (Twilio's status callback values) and the call state each one implies.
_NAME_STATES: Final = {
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

# Facts copied as they are from the gateway event that reports them.
_PLAIN_FACTS: Final = (
    "from_",
    "to",
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


class GatewayFacts(msgspec.Struct, array_like=True):
    """Call facts, each with the timestamp of the event that reported it (latest wins)."""

    from_: Stamped[Party] | None = None
    to: Stamped[Party] | None = None
    call_type: Stamped[str] | None = None
    direction: Stamped[str] | None = None
    sip_response_code: Stamped[int] | None = None
    q850_cause: Stamped[int] | None = None
    disconnected_by: Stamped[str] | None = None
    answered_by: Stamped[str] | None = None
    pdd_ms: Stamped[int] | None = None
    queue_time: Stamped[int] | None = None
    parent_call_sid: Stamped[str] | None = None
    created_time: Stamped[float] | None = None
    start_time: Stamped[float] | None = None
    end_time: Stamped[float] | None = None
    # (rank, timestamp, state): see _STATE_RANK.
    call_state: tuple[int, float, str] | None = None


class StreamTotals(msgspec.Struct, array_like=True):
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


class GatewayEdgeState(msgspec.Struct, array_like=True):
    metadata: Stamped[out.GatewayMetadata] | None = None
    disconnected_by: Stamped[str] | None = None
    terminal: bool = False
    inbound: StreamTotals | None = None
    outbound: StreamTotals | None = None


class GatewayState(msgspec.Struct, array_like=True):
    facts: GatewayFacts = msgspec.field(default_factory=GatewayFacts)
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
    return round(lost / (count + lost) * 100, 4)


def gateway_event(
    state: GatewayState, record: GatewayEvent, account_sid: str, seq: int
) -> out.CallEvent:
    """Record the event's facts and return its call event."""
    ts = record.timestamp.timestamp()
    edge = state.edge(record.edge)
    metadata = _metadata(record.metadata)
    if metadata is not None and newer(edge.metadata, ts, metadata):
        edge.metadata = (ts, metadata)
    if record.disconnected_by is not None and newer(
        edge.disconnected_by, ts, record.disconnected_by
    ):
        edge.disconnected_by = (ts, record.disconnected_by)
    _note_progress(state, edge, record, ts)
    _note_facts(state.facts, record, ts)
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
    """Add the record to its stream's totals and return its metric record."""
    ts = record.timestamp.timestamp()
    edge = state.edge(record.edge)
    metadata = _metadata(record.metadata)
    if metadata is not None and newer(edge.metadata, ts, metadata):
        edge.metadata = (ts, metadata)
    totals = _stream(edge, record.direction)
    count = record.packets_received if record.direction == "inbound" else record.packets_sent
    name = record.codec_name.lower() if record.codec_name else codec_name(record.codec)
    _add_to_totals(totals, record, ts, count, name)
    return out.CallMetric(
        account_sid=account_sid,
        call_sid=record.call_sid,
        time=record.timestamp,
        window_start=record.timestamp - _interval_length(record.interval_seconds),
        edge=record.edge,
        direction=record.direction,
        codec=record.codec,
        codec_name=name,
        interval=_interval(record, count),
        cumulative=_cumulative(record, totals),
        gateway_metadata=metadata,
    )


def _stream(edge: GatewayEdgeState, direction: str) -> StreamTotals:
    if direction == "inbound":
        if edge.inbound is None:
            edge.inbound = StreamTotals()
        return edge.inbound
    if edge.outbound is None:
        edge.outbound = StreamTotals()
    return edge.outbound


def _add_to_totals(
    totals: StreamTotals, record: GatewayMetric, ts: float, count: int | None, name: str | None
) -> None:
    totals.intervals += 1
    totals.packets += count or 0
    totals.lost += record.packets_lost
    if record.jitter is not None:
        totals.jitter.add(record.jitter.avg)
        totals.jitter.add_max(record.jitter.max)
    if record.latency is not None:
        totals.latency.add(record.latency.avg)
        totals.latency.add_max(record.latency.max)
    for bucket, delay in (record.packet_delay_variation or {}).items():
        if delay > totals.delay_variation.get(bucket, -1):
            totals.delay_variation[bucket] = delay
    codec = (record.codec, name or "")
    if newer(totals.codec, ts, codec):
        totals.codec = (ts, codec)
    reported = record.cumulative
    if reported is not None:
        reported_count = (
            reported.packets_received if record.direction == "inbound" else reported.packets_sent
        )
        totals.reported_packets = max(totals.reported_packets, reported_count or 0)
        totals.reported_lost = max(totals.reported_lost, reported.packets_lost or 0)
        if reported.jitter is not None:
            totals.jitter.add_max(reported.jitter.max)


def _interval(record: GatewayMetric, count: int | None) -> out.Metrics:
    return out.Metrics(
        packets_received=record.packets_received,
        packets_sent=record.packets_sent,
        packets_lost=record.packets_lost,
        packets_loss_percentage=loss_percentage(record.packets_lost, count),
        jitter=_stats(record.jitter),
        latency=_stats(record.latency),
        packet_delay_variation=record.packet_delay_variation,
    )


def _cumulative(record: GatewayMetric, totals: StreamTotals) -> out.Metrics:
    """Running totals as of this record; what the gateway reported itself takes precedence."""
    inbound = record.direction == "inbound"
    reported = record.cumulative
    count: int | None = totals.packets
    lost: int | None = totals.lost
    jitter = totals.jitter.stats(3, with_min=False)
    if reported is not None:
        own = reported.packets_received if inbound else reported.packets_sent
        count = own if own is not None else count
        lost = reported.packets_lost if reported.packets_lost is not None else lost
        if reported.jitter is not None:
            jitter = out.MetricStats(avg=reported.jitter.avg, max=reported.jitter.max)
    return out.Metrics(
        packets_received=count if inbound else None,
        packets_sent=None if inbound else count,
        packets_lost=lost,
        packets_loss_percentage=loss_percentage(lost, count),
        jitter=jitter,
    )


_TEN_SECONDS: Final = timedelta(seconds=10)


def _interval_length(seconds: float) -> timedelta:
    # Nearly every record has the standard 10 s; building a timedelta costs more than a check.
    return _TEN_SECONDS if seconds == 10.0 else timedelta(seconds=seconds)


def _stats(stats: MillisStats | None) -> out.MetricStats | None:
    if stats is None:
        return None
    return out.MetricStats(min=stats.min, max=stats.max, avg=stats.avg)


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
