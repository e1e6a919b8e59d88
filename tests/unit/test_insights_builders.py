"""Telemetry builders and a timer-driving harness shared by the insights tests.

``Driver`` plays the engine runtime's part (engine.py): it keeps the call's state and its
timers, applies batches at a given processing time and fires due timers earliest first,
optionally round-tripping the state through encode/decode between steps as the runtime does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from callstream.insights.call import CallInsights
from callstream.insights.state import CallState
from callstream.insights.step import EngineConfig, Step
from callstream.model.insights import CallEvent, CallMetric, CallSummary, InsightEvent
from callstream.model.mos import calculate_mos, round_mos
from callstream.model.telemetry import (
    GatewayEvent,
    GatewayMetric,
    MillisStats,
    Party,
    SdkEvent,
    SdkSample,
    TelemetryRecord,
)

ACCOUNT = "AC" + "a" * 32
T0 = 1_700_000_000.0


def call_sid(n: int = 1) -> str:
    return f"CA{n:032x}"


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


class CallBuilder:
    """Records of one call, timestamps given as seconds after ``T0``."""

    def __init__(self, sid: str | None = None) -> None:
        self.sid = sid or call_sid()
        self._ids = itertools.count()
        self._totals = dict.fromkeys(
            ("bytes_received", "bytes_sent", "packets_lost", "packets_received", "packets_sent"), 0
        )
        self._samples = 0

    def _id(self) -> str:
        return f"r{next(self._ids)}"

    def gateway_event(
        self, t: float, name: str, edge: str = "carrier_edge", **facts: Any
    ) -> GatewayEvent:
        return GatewayEvent(
            id=self._id(), call_sid=self.sid, timestamp=at(t), edge=edge, name=name, **facts
        )

    def gateway_metric(
        self,
        t: float,
        direction: str = "inbound",
        edge: str = "carrier_edge",
        packets: int = 500,
        lost: int = 0,
        jitter: tuple[float, float] | None = (1.0, 3.0),
        **extra: Any,
    ) -> GatewayMetric:
        count = (
            {"packets_received": packets} if direction == "inbound" else {"packets_sent": packets}
        )
        return GatewayMetric(
            id=self._id(),
            call_sid=self.sid,
            timestamp=at(t),
            edge=edge,
            direction=direction,
            codec=0,
            codec_name="pcmu",
            packets_lost=lost,
            jitter=None if jitter is None else MillisStats(avg=jitter[0], max=jitter[1]),
            **count,
            **extra,
        )

    def sdk_event(
        self,
        t: float,
        group: str,
        name: str,
        level: str = "INFO",
        payload: dict[str, Any] | None = None,
        **extra: Any,
    ) -> SdkEvent:
        defaults: dict[str, Any] = {"sdk_version": "2.18.0", "platform": "browser"}
        defaults.update(extra)
        return SdkEvent(
            id=self._id(),
            call_sid=self.sid,
            timestamp=at(t),
            group=group,
            name=name,
            level=level,
            payload=payload,
            **defaults,
        )

    def sample(
        self,
        t: float,
        *,
        rtt: float | None = 80.0,
        jitter: float = 5.0,
        loss: float = 0.0,
        audio_in: float | None = None,
        audio_out: float | None = None,
        bytes_received: int = 8000,
        bytes_sent: int = 8000,
        packets: int = 50,
        mos: float | str | None = "auto",
    ) -> SdkSample:
        """A 1-second sample; MOS as twilio-voice.js computes it (null on the first one).

        Audio levels default to speech that alternates between talk and pause, far from the
        constant level the SDK warns about.
        """
        talking = self._samples % 2 == 0
        audio_in = (6000.0 if talking else 1500.0) if audio_in is None else audio_in
        audio_out = (1200.0 if talking else 7000.0) if audio_out is None else audio_out
        lost = round(packets * loss / 100)
        received = packets - lost
        for key, delta in (
            ("bytes_received", bytes_received),
            ("bytes_sent", bytes_sent),
            ("packets_lost", lost),
            ("packets_received", received),
            ("packets_sent", packets),
        ):
            self._totals[key] += delta
        if mos == "auto":
            mos = None if self._samples == 0 else round_mos(calculate_mos(rtt, jitter, loss))
        self._samples += 1
        return SdkSample(
            id=self._id(),
            call_sid=self.sid,
            timestamp=at(t),
            audio_codec="opus",
            audio_level_in=audio_in,
            audio_level_out=audio_out,
            bytes_received=bytes_received,
            bytes_sent=bytes_sent,
            call_volume_input=0.1,
            call_volume_output=0.1,
            jitter=jitter,
            mos=mos,  # type: ignore[arg-type]
            packets_lost=lost,
            packets_lost_fraction=loss,
            packets_received=received,
            packets_sent=packets,
            rtt=rtt,
            total_bytes_received=self._totals["bytes_received"],
            total_bytes_sent=self._totals["bytes_sent"],
            total_packets_lost=self._totals["packets_lost"],
            total_packets_received=self._totals["packets_received"],
            total_packets_sent=self._totals["packets_sent"],
        )

    def samples(self, start: float, count: int, **values: Any) -> list[SdkSample]:
        return [self.sample(start + i, **values) for i in range(count)]


def pstn_call(b: CallBuilder, talk: float = 30.0, **end_facts: Any) -> list[TelemetryRecord]:
    """An inbound PSTN call on the carrier edge: progress events and 10-s metrics."""
    party_from = Party(caller="+14155550100", country_code="US", carrier="ACME")
    party_to = Party(callee="+14155550199", country_code="US")
    records: list[TelemetryRecord] = [
        b.gateway_event(
            0, "initiated", call_type="carrier", direction="inbound", from_=party_from, to=party_to
        ),
        b.gateway_event(2, "ringing", pdd_ms=2000),
        b.gateway_event(5, "answered", call_state="answered"),
    ]
    t = 5.0
    while t + 10 <= 5 + talk:
        t += 10
        records.append(b.gateway_metric(t, "inbound"))
        records.append(b.gateway_metric(t, "outbound"))
    facts: dict[str, Any] = {
        "call_state": "completed",
        "sip_response_code": 200,
        "q850_cause": 16,
        "disconnected_by": "caller",
    }
    facts.update(end_facts)
    records.append(b.gateway_event(5 + talk, "completed", **facts))
    return records


def trunking_call(b: CallBuilder, talk: float = 30.0) -> list[TelemetryRecord]:
    """A SIP trunking call: the PBX side on sip_edge, the PSTN side on carrier_edge."""
    records: list[TelemetryRecord] = [
        b.gateway_event(
            0,
            "initiated",
            edge="sip_edge",
            call_type="trunking",
            direction="trunking_terminating",
            from_=Party(caller="sip:pbx@example.com"),
            to=Party(callee="+442071838750", country_code="GB"),
        ),
        b.gateway_event(0.2, "initiated", edge="carrier_edge"),
        b.gateway_event(3, "ringing", edge="carrier_edge", pdd_ms=2800),
        b.gateway_event(6, "answered", edge="carrier_edge", call_state="answered"),
    ]
    t = 6.0
    while t + 10 <= 6 + talk:
        t += 10
        for edge in ("sip_edge", "carrier_edge"):
            records.append(b.gateway_metric(t, "inbound", edge=edge))
            records.append(b.gateway_metric(t, "outbound", edge=edge))
    end = {"call_state": "completed", "sip_response_code": 200, "disconnected_by": "callee"}
    records.append(b.gateway_event(6 + talk, "completed", edge="carrier_edge", **end))
    records.append(b.gateway_event(6 + talk + 0.1, "completed", edge="sip_edge", **end))
    return records


def client_call(b: CallBuilder, talk: int = 30, **sample_values: Any) -> list[TelemetryRecord]:
    """A Voice SDK call answered in the browser: client_edge events and metrics, SDK events
    and one sample per second from t=4 for ``talk`` seconds."""
    records: list[TelemetryRecord] = [
        b.gateway_event(
            0,
            "initiated",
            edge="client_edge",
            call_type="client",
            direction="outbound_dial",
            from_=Party(caller="+14155550100"),
            to=Party(callee="client:alice"),
        ),
        b.sdk_event(0.5, "connection", "incoming", direction="INCOMING"),
        b.gateway_event(1, "ringing", edge="client_edge"),
        b.sdk_event(3, "connection", "accepted-by-local", direction="INCOMING"),
        b.gateway_event(3, "answered", edge="client_edge", call_state="answered"),
        b.sdk_event(3.2, "ice-connection-state", "connected", "DEBUG"),
        b.sdk_event(
            3.3,
            "ice-candidate",
            "selected-ice-candidate-pair",
            "DEBUG",
            payload={
                "local_candidate": {"candidate_type": "host", "protocol": "udp"},
                "remote_candidate": {"candidate_type": "srflx", "protocol": "udp"},
            },
        ),
    ]
    records.extend(b.samples(4, talk, **sample_values))
    for t in range(14, 4 + talk + 1, 10):
        records.append(b.gateway_metric(t, "inbound", edge="client_edge"))
        records.append(b.gateway_metric(t, "outbound", edge="client_edge"))
    end = 4 + talk
    records += [
        b.sdk_event(end, "connection", "disconnected-by-remote", direction="INCOMING"),
        b.gateway_event(end, "completed", edge="client_edge", call_state="completed"),
        b.sdk_event(
            end + 1,
            "feedback",
            "received",
            payload={"issue_name": "choppy-audio", "quality_score": 3},
        ),
    ]
    return records


class Driver:
    """The runtime's part for one call: state, timers, batches, due timers."""

    def __init__(
        self,
        logic: CallInsights | None = None,
        *,
        config: EngineConfig | None = None,
        sid: str | None = None,
        roundtrip: bool = True,
    ) -> None:
        self.logic = logic or CallInsights(
            config or EngineConfig(partial_after=10, complete_after=600)
        )
        self.state: CallState = self.logic.new_state(ACCOUNT, sid or call_sid())
        self.timers: dict[str, float] = {}
        self.events: list[InsightEvent] = []
        self.fired: list[tuple[str, float]] = []
        self.roundtrip = roundtrip
        self.clock = T0

    def _take(self, step: Step) -> list[InsightEvent]:
        for kind, due in step.timers.items():
            if due is None:
                self.timers.pop(kind, None)
            else:
                self.timers[kind] = due
        self.events.extend(step.events)
        if self.roundtrip:
            self.state = self.logic.decode_state(self.logic.encode_state(self.state))
        return step.events

    def apply(self, records: Sequence[TelemetryRecord], now: float) -> list[InsightEvent]:
        self.clock = max(self.clock, T0 + now)
        return self._take(self.logic.apply(self.state, records, T0 + now))

    def advance(self, to: float) -> list[InsightEvent]:
        """Fire every timer due at or before ``to`` (seconds after T0), earliest first.

        A timer fires at its due time, or at the latest processing time seen when it was
        already overdue then (as the runtime fires overdue timers on its next step)."""
        produced: list[InsightEvent] = []
        while True:
            due = [(when, kind) for kind, when in self.timers.items() if when <= T0 + to]
            if not due:
                return produced
            when, kind = min(due)
            del self.timers[kind]
            self.fired.append((kind, when - T0))
            self.clock = max(self.clock, when)
            step = self.logic.fire(self.state, kind, self.clock)
            produced.extend(self._take(step))

    def due(self, kind: str) -> float | None:
        when = self.timers.get(kind)
        return None if when is None else when - T0


def of_type(events: Iterable[InsightEvent], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def summaries(events: Iterable[InsightEvent]) -> list[CallSummary]:
    return of_type(events, CallSummary)


def call_events(events: Iterable[InsightEvent]) -> list[CallEvent]:
    return of_type(events, CallEvent)


def metrics(events: Iterable[InsightEvent]) -> list[CallMetric]:
    return of_type(events, CallMetric)
