"""Gateway telemetry of a simulated call: call-progress events and 10-second media samples."""

from __future__ import annotations

import math
from typing import Final, Literal

from callstream.model.telemetry import (
    AnsweredBy,
    CallState,
    GatewayCumulative,
    GatewayEvent,
    GatewayMetric,
    MillisStats,
)
from callstream.sim.calls import Edge, Outcome
from callstream.sim.context import CallContext

__all__ = ["GatewayRecords", "MediaWindow"]

PACKETS_PER_SECOND: Final = 50  # 20 ms packetisation
_CODECS: Final[dict[Edge, tuple[tuple[int, str], ...]]] = {
    "carrier_edge": ((0, "pcmu"), (0, "pcmu"), (0, "pcmu"), (8, "pcma")),
    "sip_edge": ((0, "pcmu"), (0, "pcmu"), (9, "g722")),
    "client_edge": ((111, "opus"),),
}
_CALL_STATES: Final[dict[Outcome, CallState]] = {
    "completed": "completed",
    "busy": "busy",
    "no-answer": "noanswer",
    "failed": "fail",
    "canceled": "canceled",
}
# Percentiles of packet delay variation reported per interval (``dNN``), read as an
# exponential distribution whose mean is the interval's average jitter: pNN = -mean*ln(1-NN%).
_PDV_FACTORS: Final = tuple(
    (name, -math.log(1 - q))
    for name, q in (("d50", 0.5), ("d70", 0.7), ("d90", 0.9), ("d99", 0.99))
)


class MediaWindow:
    """What one edge measured over one metric interval, accumulated second by second."""

    __slots__ = ("jitter_max", "jitter_sum", "latency_sum", "loss_sum", "seconds")

    def __init__(self) -> None:
        self.seconds = 0.0
        self.jitter_sum = self.jitter_max = self.loss_sum = self.latency_sum = 0.0

    def add(self, jitter: float, loss: float, latency: float, seconds: float = 1.0) -> None:
        self.seconds += seconds
        self.jitter_sum += jitter * seconds
        self.loss_sum += loss * seconds
        self.latency_sum += latency * seconds
        if jitter > self.jitter_max:
            self.jitter_max = jitter


class _EdgeTotals:
    __slots__ = ("lost", "received", "sent")

    def __init__(self) -> None:
        self.received = self.sent = self.lost = 0


class GatewayRecords:
    """Builds the gateway records of one call, edge by edge."""

    def __init__(self, ctx: CallContext) -> None:
        self._ctx = ctx
        rng = ctx.rng
        self._codecs = {edge: rng.choice(_CODECS[edge]) for edge in ctx.plan.edges}
        self._totals = {edge: _EdgeTotals() for edge in ctx.plan.edges}
        # Which direction carries nothing on a one-way-audio call, seen from the gateway.
        self.dead: Literal["inbound", "outbound"] | None = None
        if ctx.profile.one_way:
            self.dead = "inbound" if rng.random() < 0.5 else "outbound"

    # --- call progress ---

    def progress(self) -> list[tuple[float, GatewayEvent]]:
        """Every edge's progress events, each with its time."""
        events: list[tuple[float, GatewayEvent]] = []
        for position, edge in enumerate(self._ctx.plan.edges):
            # A second edge (SIP trunking) logs the same progress a few milliseconds later.
            lag = 0.0 if position == 0 else 0.005 + 0.045 * self._ctx.rng.random()
            events.extend(self._edge_progress(edge, lag))
        return events

    def _edge_progress(self, edge: Edge, lag: float) -> list[tuple[float, GatewayEvent]]:
        plan = self._ctx.plan
        out = [self._event(edge, plan.created + lag, "initiated", facts=True)]
        if plan.ringing is not None:
            pdd_ms = round((plan.ringing - plan.started) * 1000)
            out.append(self._event(edge, plan.ringing + lag, "ringing", "ringing", pdd_ms=pdd_ms))
        if plan.answered is not None:
            answered_by = self._answered_by()
            out.append(
                self._event(
                    edge, plan.answered + lag, "answered", "answered", answered_by=answered_by
                )
            )
        # The final event repeats the call's facts: it is the one a summary cannot do without.
        state = _CALL_STATES[plan.outcome]
        out.append(self._event(edge, plan.ended + lag, "completed", state, facts=True, final=True))
        return out

    def _event(
        self,
        edge: Edge,
        t: float,
        name: str,
        call_state: CallState | None = None,
        *,
        facts: bool = False,
        final: bool = False,
        pdd_ms: int | None = None,
        answered_by: AnsweredBy | None = None,
    ) -> tuple[float, GatewayEvent]:
        ctx, plan, parties = self._ctx, self._ctx.plan, self._ctx.parties
        event = GatewayEvent(
            id=ctx.new_id(),
            call_sid=ctx.sid,
            timestamp=ctx.at(t),
            edge=edge,
            name=name,
            call_state=call_state,
            pdd_ms=pdd_ms,
            answered_by=answered_by,
            metadata=parties.metadata,
            from_=parties.from_party if facts else None,
            to=parties.to_party if facts else None,
            call_type=plan.call_type if facts else None,
            direction=plan.direction if facts else None,
            created_time=ctx.at(plan.created) if facts else None,
            start_time=ctx.at(plan.started) if facts else None,
            queue_time=plan.queue_ms if facts else None,
            sip_response_code=plan.sip_response_code if final else None,
            q850_cause=plan.q850_cause if final else None,
            disconnected_by=plan.disconnected_by if final else None,
            end_time=ctx.at(plan.ended) if final else None,
        )
        return t, event

    def _answered_by(self) -> AnsweredBy | None:
        # Answering-machine detection runs on some API-originated calls only.
        plan, rng = self._ctx.plan, self._ctx.rng
        if plan.direction != "outbound_api" or rng.random() >= 0.4:
            return None
        draw = rng.random()
        return "human" if draw < 0.7 else "machine_start" if draw < 0.9 else "machine_end_beep"

    # --- media ---

    def metrics(
        self, edge: Edge, t: float, interval: float, window: MediaWindow | None
    ) -> tuple[GatewayMetric, GatewayMetric]:
        """The inbound and outbound samples of ``edge`` for the interval ending at ``t``.

        ``window`` holds the impaired network's seconds; None means a clean network (the
        carrier side of a SIP trunk, whose far end is not what the profile describes).
        """
        ctx, rng = self._ctx, self._ctx.rng
        expected = max(1, round(PACKETS_PER_SECOND * interval))
        if window is not None and window.seconds:
            n = window.seconds
            loss = window.loss_sum / n
            jitter_avg = window.jitter_sum / n
            # Per-packet peaks exceed the per-second averages the window holds.
            jitter_max = window.jitter_max * (1.2 + 0.4 * rng.random())
            latency = window.latency_sum / n
        else:
            loss = 0.0
            jitter_avg = 0.2 + 1.8 * rng.random()
            jitter_max = jitter_avg * (1.5 + 1.5 * rng.random())
            latency = 5.0 + 25.0 * rng.random()
        lost = min(expected, int(expected * loss / 100 + rng.random()))
        received = 0 if self.dead == "inbound" else expected - lost
        lost = 0 if self.dead == "inbound" else lost
        sent = expected
        # The far end's receiver reports say everything sent was lost.
        lost_out = expected if self.dead == "outbound" else 0
        totals = self._totals[edge]
        totals.received += received
        totals.sent += sent
        totals.lost += lost
        codec, codec_name = self._codecs[edge]
        timestamp = ctx.at(t)
        metadata = ctx.parties.metadata
        interval = round(interval, 3)
        inbound = GatewayMetric(
            id=ctx.new_id(),
            call_sid=ctx.sid,
            timestamp=timestamp,
            edge=edge,
            direction="inbound",
            codec=codec,
            codec_name=codec_name,
            interval_seconds=interval,
            packets_received=received,
            packets_lost=lost,
            jitter=MillisStats(avg=round(jitter_avg, 3), max=round(jitter_max, 3)),
            latency=MillisStats(avg=round(latency, 1), max=round(latency * 1.4, 1)),
            packet_delay_variation=_pdv(jitter_avg),
            cumulative=GatewayCumulative(
                packets_received=totals.received, packets_lost=totals.lost
            ),
            metadata=metadata,
        )
        out_jitter = 0.1 + 0.9 * rng.random()
        outbound = GatewayMetric(
            id=ctx.new_id(),
            call_sid=ctx.sid,
            timestamp=timestamp,
            edge=edge,
            direction="outbound",
            codec=codec,
            codec_name=codec_name,
            interval_seconds=interval,
            packets_sent=sent,
            packets_lost=lost_out,
            jitter=MillisStats(avg=round(out_jitter, 3), max=round(out_jitter * 2, 3)),
            cumulative=GatewayCumulative(packets_sent=totals.sent),
            metadata=metadata,
        )
        return inbound, outbound


def _pdv(jitter_avg: float) -> dict[str, int]:
    return {name: int(jitter_avg * factor + 0.5) for name, factor in _PDV_FACTORS}
