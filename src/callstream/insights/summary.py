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
from typing import Any, Final, NamedTuple, TypeVar, cast

import msgspec

from callstream.insights.aggregates import Stamped
from callstream.insights.codecs import payload_type
from callstream.insights.gateway import (
    GatewayEdgeState,
    GatewayState,
    StreamTotals,
    loss_percentage,
)
from callstream.insights.quality import Streams, TagThresholds, call_tags
from callstream.insights.sdk_events import SdkEventState
from callstream.insights.sdk_metrics import SampleTotals, current_totals
from callstream.insights.state import CallState
from callstream.model import insights as out
from callstream.model.telemetry import Party

__all__ = ["CallTimes", "call_times", "call_type_of", "digest", "emit", "summary_content"]

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


def summary_content(state: CallState, thresholds: TagThresholds) -> out.CallSummary:
    """Everything the summary says about the call, as a partial of version 0 at the epoch."""
    gateway = state.gateway or GatewayState()
    facts = gateway.facts
    sdk = state.sdk
    samples = _samples(state)
    times = _times(state, samples)
    answered = times.answered is not None or _call_state(gateway, sdk) in ("answered", "completed")
    edges = {
        name: _edge_summary(gateway.edges[name], facts.direction)
        for name in _GATEWAY_EDGES
        if name in gateway.edges
    }
    sdk_edge = _sdk_edge(sdk, samples) if sdk is not None or samples is not None else None
    from_, to = _parties(facts.from_, facts.to, sdk)
    return out.CallSummary(
        account_sid=state.account_sid,
        call_sid=state.call_sid,
        time=_EPOCH,
        kind="partial",
        processing_state="partial",
        processing_version=0,
        call_type=_call_type(gateway, sdk, samples),
        call_state=_call_state(gateway, sdk),
        answered_by=cast(out.AnsweredBy, _value(facts.answered_by) or "unknown"),
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
            pdd_ms=_pdd_ms(gateway, times),
            ice_failure=sdk is not None and sdk.ice_failed and not sdk.ice_connected,
        ),
        properties=_properties(gateway, sdk, times),
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
    return _times(state, _samples(state))


def _times(state: CallState, samples: SampleTotals | None) -> CallTimes:
    gateway = state.gateway or GatewayState()
    facts = gateway.facts
    sdk = state.sdk
    seen = [
        t
        for t in (sdk.first_event if sdk else None, samples.first if samples else None)
        if t is not None
    ]
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
    return _call_type(state.gateway or GatewayState(), state.sdk, _samples(state))


def _call_type(
    gateway: GatewayState, sdk: SdkEventState | None, samples: SampleTotals | None
) -> out.CallType:
    reported = _value(gateway.facts.call_type)
    if reported is not None:
        return cast(out.CallType, reported)
    edges = gateway.edges
    if "client_edge" in edges or sdk is not None or samples is not None:
        return "client"
    if "sip_edge" in edges:
        return "trunking" if "carrier_edge" in edges else "sip"
    return "carrier"


def _call_state(gateway: GatewayState, sdk: SdkEventState | None) -> out.CallState:
    if gateway.facts.call_state is not None:
        return cast(out.CallState, gateway.facts.call_state[2])
    if sdk is not None and sdk.ended is not None:
        return "completed" if sdk.answered is not None else "canceled"
    if sdk is not None and sdk.answered is not None:
        return "answered"
    return "ringing"


def _pdd_ms(gateway: GatewayState, times: CallTimes) -> int | None:
    """Post-dial delay as reported, else from the call's start to its first ringing."""
    reported = _value(gateway.facts.pdd_ms)
    if reported is not None:
        return reported
    if gateway.ringing is None or times.start is None or gateway.ringing < times.start:
        return None
    return int((gateway.ringing - times.start) * 1000 + 0.5)


def _properties(
    gateway: GatewayState, sdk: SdkEventState | None, times: CallTimes
) -> out.SummaryProperties:
    facts = gateway.facts
    disconnected_by = _value(facts.disconnected_by)
    if disconnected_by is None and sdk is not None:
        disconnected_by = _value(sdk.facts.disconnected_by)
    return out.SummaryProperties(
        direction=cast(out.CallDirection | None, _value(facts.direction)),
        disconnected_by=cast(out.DisconnectedBy | None, disconnected_by),
        last_sip_response_num=_value(facts.sip_response_code),
        pdd_ms=_pdd_ms(gateway, times),
        queue_time=_value(facts.queue_time),
        q850_cause=_value(facts.q850_cause),
    )


def _parties(
    caller: Stamped[Party] | None, callee: Stamped[Party] | None, sdk: SdkEventState | None
) -> tuple[out.CallParty | None, out.CallParty | None]:
    from_ = _party(_value(caller))
    to = _party(_value(callee))
    info = _value(sdk.facts.sdk) if sdk is not None else None
    if sdk is None or info is None:
        return from_, to
    # The SDK is the calling party when it placed the call, the called party otherwise.
    if _value(sdk.facts.direction) == "OUTGOING":
        return msgspec.structs.replace(from_ or out.CallParty(), sdk=info), to
    return from_, msgspec.structs.replace(to or out.CallParty(), sdk=info)


def _party(party: Party | None) -> out.CallParty | None:
    if party is None:
        return None
    location = party.location
    return out.CallParty(
        caller=party.caller,
        callee=party.callee,
        carrier=party.carrier,
        connection=party.connection,
        number_prefix=party.number_prefix,
        location=None if location is None else out.Location(lat=location.lat, lon=location.lon),
        city=party.city,
        country_code=party.country_code,
        country_subdivision=party.country_subdivision,
        ip_address=party.ip_address,
    )


# --- edges --------------------------------------------------------------------------------------


def _edge_summary(
    edge: GatewayEdgeState, call_direction: Stamped[str] | None
) -> out.GatewayEdgeSummary:
    metadata = _value(edge.metadata) or out.GatewayMetadata()
    direction = _EDGE_DIRECTION.get(_value(call_direction) or "", "unknown")
    return out.GatewayEdgeSummary(
        properties=out.EdgeProperties(
            direction=direction,
            media_region=metadata.region,
            edge_location=metadata.edge_location,
            twilio_media_ip=metadata.twilio_ip,
            external_media_ip=metadata.external_ip,
            region=metadata.region,
            disconnected_by=cast(out.DisconnectedBy | None, _value(edge.disconnected_by)),
        ),
        inbound=_stream_metrics(edge.inbound, inbound=True),
        outbound=_stream_metrics(edge.outbound, inbound=False),
    )


def _stream_metrics(totals: StreamTotals | None, *, inbound: bool) -> out.Metrics | None:
    if totals is None:
        return None
    count = totals.packet_count
    lost = totals.lost_count
    codec, name = totals.codec[1] if totals.codec is not None else (None, None)
    return out.Metrics(
        codec=codec,
        codec_name=name or None,
        packets_received=count if inbound else None,
        packets_sent=None if inbound else count,
        packets_lost=lost,
        packets_loss_percentage=loss_percentage(lost, count),
        jitter=totals.jitter.stats(3, with_min=False),
        latency=totals.latency.stats(3, with_min=False),
        packet_delay_variation=dict(sorted(totals.delay_variation.items())) or None,
    )


def _sdk_edge(sdk: SdkEventState | None, samples: SampleTotals | None) -> out.SdkEdgeSummary:
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
    if sdk is None:
        return out.SdkEdgeSummary(inbound=inbound, outbound=outbound)
    facts = sdk.facts
    return out.SdkEdgeSummary(
        properties=out.SdkEdgeProperties(
            direction=_SDK_DIRECTION.get(_value(facts.direction) or "", "unknown"),
            disconnected_by=cast(out.DisconnectedBy | None, _value(facts.disconnected_by)),
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
            levels=cast(Mapping[out.Level, int], _sorted(sdk.levels)),
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
