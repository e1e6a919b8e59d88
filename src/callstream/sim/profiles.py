"""Network quality profiles and the per-second network process they drive.

A call's network is a two-state (Gilbert-Elliott) Markov chain: a calm state with a baseline
RTT/jitter/loss that wanders slowly, and congestion bursts that add RTT, jitter and loss for a
few seconds. The profile sets how often bursts start and end and how bad they are; each call
also draws a severity, so some calls on a poor profile cross the SDK warning and summary tag
thresholds and others stay below them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from random import Random
from types import MappingProxyType
from typing import Final, Literal

__all__ = ["PROFILES", "NetworkPath", "ProfileName", "QualityProfile", "SpeechActivity"]

ProfileName = Literal["good", "congested_wifi", "lossy_mobile", "one_way_audio", "ice_failure"]

Range = tuple[float, float]


@dataclass(frozen=True, slots=True)
class QualityProfile:
    name: ProfileName
    rtt: Range
    """Per-call baseline round-trip time, ms."""
    rtt_wander: float
    """Half-width of the per-second step of the RTT random walk, ms."""
    jitter: Range
    """Per-call baseline jitter, ms."""
    loss: Range
    """Per-call baseline packet loss outside bursts, percent."""
    latency: Range
    """Gateway-internal RTP traversal time, ms; bursts add a third of their RTT."""
    rtt_cap: float
    jitter_cap: float
    connection_type: Literal["wifi", "cellular", "ethernet"]
    burst_start: float = 0.0
    """Probability per second that a congestion burst begins."""
    burst_end: float = 1.0
    """Probability per second that a burst ends (mean length 1/burst_end s)."""
    burst_rtt: Range = (0.0, 0.0)
    burst_jitter: Range = (0.0, 0.0)
    burst_loss: Range = (0.0, 0.0)
    """What a burst adds: RTT ms, jitter ms, loss percent (scaled by the call's severity)."""
    severity: Range = (0.0, 0.0)
    """Per-call multiplier of burst magnitudes."""
    one_way: bool = False
    ice_failure: bool = False

    @property
    def poor(self) -> bool:
        """Whether the profile is meant to impair the call."""
        return self.name != "good"


_GOOD = QualityProfile(
    name="good",
    rtt=(20.0, 140.0),
    rtt_wander=4.0,
    jitter=(0.5, 5.0),
    loss=(0.0, 0.0),
    latency=(8.0, 45.0),
    rtt_cap=300.0,
    jitter_cap=12.0,
    connection_type="ethernet",
)

PROFILES: Final = MappingProxyType(
    {
        # Stays clear of every SDK warning threshold and every summary tag by construction:
        # RTT <= 300 ms and jitter <= 12 ms, no loss on the SDK's inbound stream.
        "good": _GOOD,
        "congested_wifi": QualityProfile(
            name="congested_wifi",
            rtt=(40.0, 160.0),
            rtt_wander=8.0,
            jitter=(4.0, 14.0),
            loss=(0.0, 0.6),
            latency=(10.0, 60.0),
            rtt_cap=2500.0,
            jitter_cap=250.0,
            connection_type="wifi",
            burst_start=0.04,
            burst_end=0.18,
            burst_rtt=(120.0, 480.0),
            burst_jitter=(18.0, 70.0),
            burst_loss=(1.5, 12.0),
            severity=(0.3, 1.3),
        ),
        "lossy_mobile": QualityProfile(
            name="lossy_mobile",
            rtt=(120.0, 320.0),
            rtt_wander=15.0,
            jitter=(8.0, 22.0),
            loss=(0.3, 2.0),
            latency=(15.0, 80.0),
            rtt_cap=3000.0,
            jitter_cap=250.0,
            connection_type="cellular",
            burst_start=0.05,
            burst_end=0.2,
            burst_rtt=(150.0, 650.0),
            burst_jitter=(15.0, 45.0),
            burst_loss=(4.0, 25.0),
            severity=(0.3, 1.3),
        ),
        # A healthy network where one direction carries nothing (muted or broken device, NAT).
        "one_way_audio": replace(
            _GOOD, name="one_way_audio", rtt=(30.0, 150.0), connection_type="wifi", one_way=True
        ),
        # ICE checks fail: signalling works, media never flows.
        "ice_failure": replace(_GOOD, name="ice_failure", connection_type="wifi", ice_failure=True),
    }
)


def _between(rng: Random, bounds: Range) -> float:
    low, high = bounds
    return low + (high - low) * rng.random()


class NetworkPath:
    """One call's network, advanced one second at a time.

    ``rtt``, ``jitter`` (ms) and ``loss`` (percent) hold the current second's values after
    ``step()``; ``latency`` is the gateway-internal traversal time of the same second.
    """

    __slots__ = (
        "_burst_jitter",
        "_burst_loss",
        "_burst_rtt",
        "_jitter0",
        "_latency0",
        "_loss0",
        "_profile",
        "_rng",
        "_rtt0",
        "_rtt_dev",
        "_severity",
        "in_burst",
        "jitter",
        "latency",
        "loss",
        "rtt",
    )

    def __init__(self, profile: QualityProfile, rng: Random) -> None:
        self._profile = profile
        self._rng = rng
        self._rtt0 = _between(rng, profile.rtt)
        self._jitter0 = _between(rng, profile.jitter)
        self._loss0 = _between(rng, profile.loss)
        self._latency0 = _between(rng, profile.latency)
        self._severity = _between(rng, profile.severity)
        self._rtt_dev = 0.0
        self._burst_rtt = self._burst_jitter = self._burst_loss = 0.0
        self.in_burst = False
        self.rtt = self._rtt0
        self.jitter = self._jitter0
        self.loss = self._loss0
        self.latency = self._latency0

    def step(self, seconds: float = 1.0) -> None:
        """Advance ``seconds`` (1 for SDK samples; a whole metric interval for calls that
        only gateways observe, which need no per-second detail)."""
        rng = self._rng
        profile = self._profile
        burst_start, burst_end, reversion, spread = profile.burst_start, profile.burst_end, 0.9, 1.0
        if seconds != 1.0:
            # The same chain and walk, sampled at a coarser step.
            burst_start = 1 - (1 - burst_start) ** seconds
            burst_end = 1 - (1 - burst_end) ** seconds
            reversion = 0.9**seconds
            spread = math.sqrt((1 - 0.81**seconds) / 0.19)
        if self.in_burst:
            if rng.random() < burst_end:
                self.in_burst = False
        elif burst_start and rng.random() < burst_start:
            self.in_burst = True
            severity = self._severity
            self._burst_rtt = severity * _between(rng, profile.burst_rtt)
            self._burst_jitter = severity * _between(rng, profile.burst_jitter)
            self._burst_loss = severity * _between(rng, profile.burst_loss)
        # Mean-reverting walk: RTT drifts but does not run away over a long call.
        self._rtt_dev = reversion * self._rtt_dev + spread * profile.rtt_wander * (
            2 * rng.random() - 1
        )
        wobble = 0.6 + 0.8 * rng.random()
        if self.in_burst:
            rtt = self._rtt0 + self._rtt_dev + self._burst_rtt * wobble
            jitter = (self._jitter0 + self._burst_jitter) * wobble
            loss = self._loss0 + self._burst_loss * wobble
            self.latency = self._latency0 + self._burst_rtt / 3
        else:
            rtt = self._rtt0 + self._rtt_dev
            jitter = self._jitter0 * wobble
            loss = self._loss0 * wobble
            self.latency = self._latency0
        self.rtt = 5.0 if rtt < 5.0 else profile.rtt_cap if rtt > profile.rtt_cap else rtt
        self.jitter = profile.jitter_cap if jitter > profile.jitter_cap else jitter
        self.loss = 100.0 if loss > 100.0 else loss


class SpeechActivity:
    """Talk spurts and pauses of one side, as the 0..32767 audio level the SDK reports.

    Pauses are short and keep a wide noise floor, so a normal conversation never shows the
    flat level the SDK's constant-audio warning is for; only a dead direction (level 0) does.
    """

    __slots__ = ("_rng", "_talking")

    def __init__(self, rng: Random) -> None:
        self._rng = rng
        self._talking = rng.random() < 0.5

    def level(self) -> int:
        rng = self._rng
        if rng.random() < (0.2 if self._talking else 0.5):
            self._talking = not self._talking
        if self._talking:
            return 2000 + int(14000 * rng.random())
        return 100 + int(2400 * rng.random())
