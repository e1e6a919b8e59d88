"""The call summary, built from a call's state when a summary timer fires (never per record).

Everything here reads commutative aggregates and timestamp-ordered facts only, so the same
records give the same summary content whatever order they arrived in. ``summary_content``
leaves out what differs between emissions (kind, processing state and version, time);
``digest`` fingerprints that content so that an unchanged summary is not emitted again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, TypeVar

import msgspec

from callstream.insights.aggregates import Stamped
from callstream.insights.codecs import payload_type
from callstream.insights.gateway import (
    GatewayEdgeState,
    GatewayFacts,
    GatewayState,
    StreamTotals,
    decode_party,
    load_facts,
    loss_percentage,
)
from callstream.insights.quality import Streams, TagThresholds, call_tags
from callstream.insights.sdk_events import SdkEventState, SdkFacts
from callstream.insights.sdk_events import load_facts as load_sdk_facts
from callstream.insights.sdk_metrics import SampleTotals, current_totals, first_sample_time
from callstream.insights.state import CallState
from callstream.model import insights as out

__all__ = [
    "CallFacts",
    "CallTimes",
    "call_facts",
    "call_times",
    "call_type_of",
    "digest",
    "emit",
    "summary_content",
]

T = TypeVar("T")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_GATEWAY_EDGES: Final = ("carrier_edge", "sip_edge", "client_edge")
_EDGE_DIRECTION: Final[Mapping[str, out.Direction]] = {
    "inbound": "inbound",
    "trunking_originating": "inbound",
    "outbound_api": "outbound",
    "outbound_dial": "outbound",
    "trunking_terminating": "outbound",
}
_SDK_DIRECTION: Final[Mapping[str, out.Direction]] = {"INCOMING": "inbound", "OUTGOING": "outbound"}
_encoder: Final = msgspec.msgpack.Encoder()
_NO_METADATA: Final = (None, None, None, None)


def summary_content(state: CallState, thresholds: TagThresholds) -> out.CallSummary:
    """Everything the summary says about the call, as a partial of version 0 at the epoch."""
    gateway = state.gateway or GatewayState()
    facts = load_facts(gateway)
    sdk = state.sdk
    samples = _samples(state)
    times = _times(gateway, facts, sdk, samples.first if samples is not None else None)
    call_state = _call_state(facts, sdk)
    answered = times.answered is not None or call_state in ("answered", "completed")
    edges = {
        name: _edge_summary(gateway.edges[name], facts.direction)
        for name in _GATEWAY_EDGES
        if name in gateway.edges
    }
    sdk_facts = load_sdk_facts(sdk) if sdk is not None else None
    sdk_edge = (
        _sdk_edge(sdk, sdk_facts, samples) if sdk is not None or samples is not None else None
    )
    from_, to = _parties(facts.from_, facts.to, sdk_facts)
    pdd_ms = _pdd_ms(gateway, facts, times)
    return out.CallSummary(
        account_sid=state.account_sid,
        call_sid=state.call_sid,
        time=_EPOCH,
        kind="partial",
        processing_state="partial",
        processing_version=0,
        call_type=_call_type(gateway, facts, sdk, samples is not None),
        call_state=call_state,
        answered_by=_value(facts.answered_by) or "unknown",
        created_time=_time(times.created),
        start_time=_time(times.start),
        end_time=_time(times.end),
        duration=_seconds(times.start, times.end),
        connect_duration=_seconds(times.answered, times.end),
        from_=from_,
        to=to,
        parent_call_sid=_value(facts.parent_call_sid),
        carrier_edge=edges.get("carrier_edge"),
        sip_edge=edges.get("sip_edge"),
        client_edge=edges.get("client_edge"),
        sdk_edge=sdk_edge,
        tags=call_tags(
            thresholds,
            gateway=[
                Streams(e.inbound, e.outbound) for e in edges.values() if e.inbound or e.outbound
            ],
            sdk=sdk_edge.inbound if sdk_edge is not None and samples is not None else None,
            answered=answered,
            pdd_ms=pdd_ms,
            ice_failure=sdk is not None and sdk.ice_failed and not sdk.ice_connected,
        ),
        properties=_properties(facts, sdk_facts, pdd_ms),
    )


class CallTimes(NamedTuple):
    """When the call was created, left the queue, was answered and ended (Unix seconds)."""

    created: float | None
    start: float | None
    answered: float | None
    end: float | None


def call_times(state: CallState) -> CallTimes:
    """The call's times: what a gateway reported, else what its events and samples show.

    A call that never reported its end (ended by the idle timer) has no end time: the
    summary says what was reported and invents nothing.
    """
    return call_facts(state).times


class CallFacts(NamedTuple):
    """What the predictor asks of a call's state, worked out once."""

    times: CallTimes
    call_type: out.CallType


def call_facts(state: CallState) -> CallFacts:
    """The call's times (``call_times``) and type (``call_type_of``) together, reading the
    state once for both."""
    gateway = state.gateway or GatewayState()
    facts = load_facts(gateway)
    # Only the first sample's time is needed here, not the totals of windows still open.
    first_sample = first_sample_time(state.samples) if state.samples is not None else None
    return CallFacts(
        times=_times(gateway, facts, state.sdk, first_sample),
        call_type=_call_type(gateway, facts, state.sdk, first_sample is not None),
    )


def _times(
    gateway: GatewayState,
    facts: GatewayFacts,
    sdk: SdkEventState | None,
    first_sample: float | None,
) -> CallTimes:
    seen = [t for t in (sdk.first_event if sdk else None, first_sample) if t is not None]
    created = _value(facts.created_time) or gateway.first_event or (min(seen) if seen else None)
    queue_ms = _value(facts.queue_time)
    start = _value(facts.start_time) or (
        created + queue_ms / 1000 if created is not None and queue_ms else created
    )
    end = _value(facts.end_time) or gateway.terminal or (sdk.ended if sdk else None)
    answered = gateway.answered or (sdk.answered if sdk else None)
    return CallTimes(created, start, answered, end)


def digest(content: out.CallSummary) -> bytes:
    return hashlib.blake2b(_encoder.encode(content), digest_size=8).digest()


def emit(
    content: out.CallSummary, kind: out.SummaryKind, version: int, now: float
) -> out.CallSummary:
    """The summary as emitted: predicted-complete still says ``partial`` (Twilio's example)."""
    return msgspec.structs.replace(
        content,
        kind=kind,
        processing_state="complete" if kind == "complete" else "partial",
        processing_version=version,
        time=datetime.fromtimestamp(now, UTC),
    )


# --- call level ---------------------------------------------------------------------------------


def call_type_of(state: CallState) -> out.CallType:
    """The call type a gateway reported, else the one its edges imply."""
    return call_facts(state).call_type


def _call_type(
    gateway: GatewayState, facts: GatewayFacts, sdk: SdkEventState | None, sampled: bool
) -> out.CallType:
    reported = _value(facts.call_type)
    if reported is not None:
        return reported
    edges = gateway.edges
    if "client_edge" in edges or sdk is not None or sampled:
        return "client"
    if "sip_edge" in edges:
        return "trunking" if "carrier_edge" in edges else "sip"
    return "carrier"


def _call_state(facts: GatewayFacts, sdk: SdkEventState | None) -> out.CallState:
    if facts.call_state is not None:
        return facts.call_state[2]
    if sdk is not None and sdk.ended is not None:
        return "completed" if sdk.answered is not None else "canceled"
    if sdk is not None and sdk.answered is not None:
        return "answered"
    return "ringing"


def _pdd_ms(gateway: GatewayState, facts: GatewayFacts, times: CallTimes) -> int | None:
    """Post-dial delay as reported, else from the call's start to its first ringing."""
    reported = _value(facts.pdd_ms)
    if reported is not None:
        return reported
    if gateway.ringing is None or times.start is None or gateway.ringing < times.start:
        return None
    return int((gateway.ringing - times.start) * 1000 + 0.5)


def _properties(
    facts: GatewayFacts, sdk: SdkFacts | None, pdd_ms: int | None
) -> out.SummaryProperties:
    disconnected_by = _value(facts.disconnected_by)
    if disconnected_by is None and sdk is not None:
        disconnected_by = _value(sdk.disconnected_by)
    return out.SummaryProperties(
        direction=_value(facts.direction),
        disconnected_by=disconnected_by,
        last_sip_response_num=_value(facts.sip_response_code),
        pdd_ms=pdd_ms,
        queue_time=_value(facts.queue_time),
        q850_cause=_value(facts.q850_cause),
    )


def _parties(
    caller: Stamped[bytes] | None, callee: Stamped[bytes] | None, sdk: SdkFacts | None
) -> tuple[out.CallParty | None, out.CallParty | None]:
    from_ = None if caller is None else decode_party(caller[1])
    to = None if callee is None else decode_party(callee[1])
    if sdk is None or sdk.sdk is None:
        return from_, to
    info = sdk.sdk[1]
    # The SDK is the calling party when it placed the call, the called party otherwise.
    if _value(sdk.direction) == "OUTGOING":
        return msgspec.structs.replace(from_ or out.CallParty(), sdk=info), to
    return from_, msgspec.structs.replace(to or out.CallParty(), sdk=info)


# --- edges --------------------------------------------------------------------------------------


def _edge_summary(
    edge: GatewayEdgeState, call_direction: Stamped[str] | None
) -> out.GatewayEdgeSummary:
    region, twilio_ip, external_ip, edge_location = (
        _NO_METADATA if edge.metadata is None else edge.metadata[1]
    )
    direction = _EDGE_DIRECTION.get(_value(call_direction) or "", "unknown")
    return out.GatewayEdgeSummary(
        properties=out.EdgeProperties(
            direction=direction,
            media_region=region,
            edge_location=edge_location,
            twilio_media_ip=twilio_ip,
            external_media_ip=external_ip,
            region=region,
            disconnected_by=_value(edge.disconnected_by),
        ),
        inbound=_stream_metrics(edge.inbound, inbound=True),
        outbound=_stream_metrics(edge.outbound, inbound=False),
    )


def _stream_metrics(totals: StreamTotals | None, *, inbound: bool) -> out.Metrics | None:
    if totals is None:
        return None
    count = max(totals.packets, totals.reported_packets)
    lost = max(totals.lost, totals.reported_lost)
    codec, name = totals.codec[1] if totals.codec is not None else (None, None)
    delays = totals.delay_variation
    return out.Metrics(
        codec=codec,
        codec_name=name or None,
        packets_received=count if inbound else None,
        packets_sent=None if inbound else count,
        packets_lost=lost,
        packets_loss_percentage=loss_percentage(lost, count),
        jitter=totals.jitter.stats(3, with_min=False),
        latency=totals.latency.stats(3, with_min=False),
        packet_delay_variation=dict(sorted(delays.items())) if delays else None,
    )


def _sdk_edge(
    sdk: SdkEventState | None, facts: SdkFacts | None, samples: SampleTotals | None
) -> out.SdkEdgeSummary:
    inbound = outbound = None
    if samples is not None:
        received, lost = samples.packets_received, samples.packets_lost
        codec = _value(samples.codec)
        inbound = out.Metrics(
            packets_received=received,
            packets_lost=lost,
            packets_loss_percentage=loss_percentage(lost, received),
            bytes_received=samples.bytes_received,
            jitter=samples.jitter.stats(2, with_min=False),
            rtt=samples.rtt.stats(2),
            mos=samples.mos.stats(2),
            audio_in=samples.audio_in.stats(2, with_min=False),
            audio_out=samples.audio_out.stats(2, with_min=False),
        )
        outbound = out.Metrics(
            codec=payload_type(codec),
            codec_name=codec.lower() if codec else None,
            packets_sent=samples.packets_sent,
            bytes_sent=samples.bytes_sent,
        )
    if sdk is None or facts is None:
        return out.SdkEdgeSummary(inbound=inbound, outbound=outbound)
    return out.SdkEdgeSummary(
        properties=out.SdkEdgeProperties(
            direction=_SDK_DIRECTION.get(_value(facts.direction) or "", "unknown"),
            disconnected_by=_value(facts.disconnected_by),
            settings=out.SdkSettings(
                dscp=_value(facts.dscp),
                ice_restart_enabled=_value(facts.ice_restart_enabled),
                edge=_value(facts.edge),
                selected_edges=_value(facts.selected_edges) or (),
            ),
        ),
        inbound=inbound,
        outbound=outbound,
        events=out.SdkEventCounts(
            levels=_sorted(sdk.levels),
            groups=_sorted(sdk.groups),
            errors=_sorted(sdk.errors),
            feedback=_value(facts.feedback),
        ),
    )


# --- small helpers ------------------------------------------------------------------------------


def _samples(state: CallState) -> SampleTotals | None:
    if state.samples is None:
        return None
    totals = current_totals(state.samples)
    return totals if totals.samples else None


def _value(stamped: Stamped[T] | None) -> T | None:
    return None if stamped is None else stamped[1]


def _sorted(counts: Mapping[Any, int]) -> dict[Any, int]:
    # Insertion order follows arrival; sorting keeps the encoded content (and its digest)
    # the same for the same counts.
    return dict(sorted(counts.items()))


def _time(moment: float | None) -> datetime | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC)


def _seconds(begin: float | None, end: float | None) -> int | None:
    if begin is None or end is None:
        return None
    return max(0, int(end - begin + 0.5))
