"""Which calls happen: call type, direction, outcome, network profile and timing.

Planning draws only the facts that decide a call's shape, from one seeded stream, in start
order. Everything else about a call (numbers, metadata, media, SDK events, delivery delays)
comes from the call's own ``seed``, so a call looks the same however the calls around it are
interleaved.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from random import Random
from typing import Final, Literal, TypeVar

from callstream.sim.profiles import ProfileName

__all__ = [
    "EDGES",
    "SDK_LEAD_MAX",
    "CallPlan",
    "CallType",
    "Direction",
    "Outcome",
    "TrafficMix",
    "mean_call_duration",
    "plan_call",
    "plan_calls",
]

CallType = Literal["carrier", "sip", "trunking", "client"]
Outcome = Literal["completed", "busy", "no-answer", "failed", "canceled"]
Direction = Literal[
    "inbound", "outbound_api", "outbound_dial", "trunking_originating", "trunking_terminating"
]
Edge = Literal["carrier_edge", "sip_edge", "client_edge"]

# The gateway edges that see each call type (Call Summary resource docs). The first edge is
# the one facing the party whose network the quality profile describes.
EDGES: Final[dict[CallType, tuple[Edge, ...]]] = {
    "carrier": ("carrier_edge",),
    "sip": ("sip_edge",),
    "trunking": ("sip_edge", "carrier_edge"),
    "client": ("client_edge",),
}

_DIRECTIONS: Final[dict[CallType, tuple[tuple[Direction, float], ...]]] = {
    "carrier": (("inbound", 0.5), ("outbound_api", 0.3), ("outbound_dial", 0.2)),
    "sip": (("inbound", 0.5), ("outbound_dial", 0.5)),
    "trunking": (("trunking_originating", 0.5), ("trunking_terminating", 0.5)),
    # inbound: the SDK placed the call (SDK direction OUTGOING); otherwise Twilio rang the SDK.
    "client": (("inbound", 0.6), ("outbound_dial", 0.3), ("outbound_api", 0.1)),
}

# SIP response and Q.850 cause for each outcome; failures pick one of several.
_FAILURES: Final = ((404, 1), (500, 41), (503, 34), (480, 18))
_ICE_FAILURE: Final = (488, 65)
_ENDINGS: Final[dict[Outcome, tuple[int, int]]] = {
    "completed": (200, 16),
    "busy": (486, 17),
    "no-answer": (480, 19),
    "canceled": (487, 16),
}

SDK_LEAD_MAX: Final = 0.5
"""An SDK that places a call starts up to this long before the gateway creates it."""

T = TypeVar("T")


def _choose(rng: Random, weighted: Sequence[tuple[T, float]]) -> T:
    draw = rng.random() * sum(w for _, w in weighted)
    for value, weight in weighted:
        draw -= weight
        if draw < 0:
            return value
    return weighted[-1][0]


def _lognormal(rng: Random, median: float, sigma: float, low: float, high: float) -> float:
    return min(max(rng.lognormvariate(math.log(median), sigma), low), high)


@dataclass(frozen=True, slots=True)
class TrafficMix:
    """The default mix holds every call type, outcome and profile, poor calls included."""

    call_types: tuple[tuple[CallType, float], ...] = (
        ("carrier", 0.35),
        ("sip", 0.15),
        ("trunking", 0.15),
        ("client", 0.35),
    )
    outcomes: tuple[tuple[Outcome, float], ...] = (
        ("completed", 0.80),
        ("busy", 0.05),
        ("no-answer", 0.06),
        ("failed", 0.04),
        ("canceled", 0.05),
    )
    profiles: tuple[tuple[ProfileName, float], ...] = (
        ("good", 0.68),
        ("congested_wifi", 0.12),
        ("lossy_mobile", 0.12),
        ("one_way_audio", 0.08),
    )
    ice_failure_share: float = 0.10
    """Share of client calls whose ICE negotiation fails (the call then fails)."""
    sdk_warning_share: float = 0.5
    """Share of client calls whose SDK publishes its own quality warnings."""
    feedback_share: float = 0.35
    """Share of answered client calls whose user leaves call-quality feedback."""
    reconnect_share: float = 0.3
    """Share of answered lossy-mobile client calls that lose ICE connectivity for a while."""
    short_call_share: float = 0.15
    """Share of answered calls that hang up within seconds (wrong number, voicemail)."""
    talk_median: float = 150.0
    talk_sigma: float = 1.0
    max_talk: float = 7200.0


@dataclass(frozen=True, slots=True)
class CallPlan:
    """The shape of one call. Times are seconds from the start of the simulation."""

    call_sid: str
    seed: int
    call_type: CallType
    direction: Direction
    outcome: Outcome
    profile: ProfileName
    created: float
    queue_ms: int
    ringing: float | None
    answered: float | None
    ended: float
    sip_response_code: int
    q850_cause: int
    disconnected_by: Literal["caller", "callee"] | None
    edges: tuple[Edge, ...]

    @property
    def started(self) -> float:
        """When the call left the queue (Summary ``start_time``)."""
        return self.created + self.queue_ms / 1000

    @property
    def has_media(self) -> bool:
        return self.answered is not None and self.profile != "ice_failure"

    @property
    def sdk_direction(self) -> Literal["INCOMING", "OUTGOING"] | None:
        if self.call_type != "client":
            return None
        return "OUTGOING" if self.direction == "inbound" else "INCOMING"


def _pdd(rng: Random, call_type: CallType) -> float:
    median = 2.5 if call_type in ("carrier", "trunking") else 0.8
    return _lognormal(rng, median, 0.5, 0.1, 20.0)


def _talk(rng: Random, mix: TrafficMix) -> float:
    if rng.random() < mix.short_call_share:
        return 2.0 + 18.0 * rng.random()
    return _lognormal(rng, mix.talk_median, mix.talk_sigma, 5.0, mix.max_talk)


def _queue_ms(rng: Random, direction: Direction) -> int:
    # Outbound API calls queue when an account exceeds its calls-per-second limit.
    if direction == "outbound_api" and rng.random() < 0.1:
        return int(1000 + 20000 * rng.random())
    return int(_lognormal(rng, 30.0, 1.0, 0.0, 900.0))


@dataclass(frozen=True, slots=True)
class _Ending:
    ringing: float | None
    answered: float | None
    ended: float
    sip_response_code: int
    q850_cause: int
    disconnected_by: Literal["caller", "callee"] | None


def _ending(
    rng: Random,
    outcome: Outcome,
    ice_failure: bool,
    call_type: CallType,
    begin: float,
    mix: TrafficMix,
) -> _Ending:
    """When the call rings, is answered and ends, and how it ends, from ``begin``."""
    if outcome == "failed":
        code, cause = _ICE_FAILURE if ice_failure else rng.choice(_FAILURES)
        # ICE gives up after its checks time out; other failures are refused at once.
        wait = 5.0 + 10.0 * rng.random() if ice_failure else 4.0 * rng.random()
        return _Ending(None, None, begin + wait, code, cause, None)
    code, cause = _ENDINGS[outcome]
    if outcome == "busy":
        ended = begin + _pdd(rng, call_type) + 0.5 * rng.random()
        return _Ending(None, None, ended, code, cause, "callee")
    ringing = begin + _pdd(rng, call_type)
    if outcome == "no-answer":
        return _Ending(ringing, None, ringing + 20.0 + 40.0 * rng.random(), code, cause, None)
    if outcome == "canceled":  # the caller gives up while it rings
        return _Ending(ringing, None, ringing + 2.0 + 18.0 * rng.random(), code, cause, "caller")
    answered = ringing + _lognormal(rng, 6.0, 0.6, 0.5, 45.0)
    ended = answered + _talk(rng, mix)
    by: Literal["caller", "callee"] = "caller" if rng.random() < 0.5 else "callee"
    return _Ending(ringing, answered, ended, code, cause, by)


def plan_call(rng: Random, created: float, mix: TrafficMix) -> CallPlan:
    """Draw one call that is created at ``created``."""
    call_sid = f"CA{rng.getrandbits(128):032x}"
    seed = rng.getrandbits(64)
    call_type = _choose(rng, mix.call_types)
    direction = _choose(rng, _DIRECTIONS[call_type])
    outcome = _choose(rng, mix.outcomes)
    profile = _choose(rng, mix.profiles)
    if call_type == "client" and rng.random() < mix.ice_failure_share:
        profile, outcome = "ice_failure", "failed"
    queue_ms = _queue_ms(rng, direction)
    end = _ending(rng, outcome, profile == "ice_failure", call_type, created + queue_ms / 1000, mix)
    return CallPlan(
        call_sid=call_sid,
        seed=seed,
        call_type=call_type,
        direction=direction,
        outcome=outcome,
        profile=profile,
        created=created,
        queue_ms=queue_ms,
        ringing=end.ringing,
        answered=end.answered,
        ended=end.ended,
        sip_response_code=end.sip_response_code,
        q850_cause=end.q850_cause,
        disconnected_by=end.disconnected_by,
        edges=EDGES[call_type],
    )


def mean_call_duration(mix: TrafficMix, samples: int = 2000) -> float:
    """Mean seconds from creation to end under ``mix``, estimated from a fixed-seed sample.

    Sampling the planner itself keeps the estimate right whatever the mix's distributions.
    """
    rng = Random(0x5EED)
    return sum(plan_call(rng, 0.0, mix).ended for _ in range(samples)) / samples


def plan_calls(
    calls: int, concurrency: float, seed: int, mix: TrafficMix | None = None
) -> Iterator[CallPlan]:
    """``calls`` calls in creation order, started as a Poisson process so that about
    ``concurrency`` are in progress at once once the first calls have run their course
    (Little's law: rate = concurrency / mean duration)."""
    mix = mix or TrafficMix()
    rate = concurrency / mean_call_duration(mix)
    rng = Random(seed)
    # Start after SDK_LEAD_MAX so no call has activity before time zero.
    created = SDK_LEAD_MAX
    for _ in range(calls):
        created += rng.expovariate(rate)
        yield plan_call(rng, created, mix)
