"""When is a call's summary complete? The features a predictor sees and the predictor protocol.

After a call ends the engine asks its ``CompletionPredictor`` from time to time whether any
more telemetry is likely to come; the first "yes" emits ``call-summary.predicted-complete``.
Durations are expressed as fractions of ``complete_after`` so that a model trained with the
production timer (30 minutes) still works when a demo shortens it to seconds.

``PredictorFeatures.as_vector`` is the contract with trained models: its order is
``FEATURE_NAMES``, and changes only by appending (a model trained on an older vector reads
its prefix).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec

from callstream.insights.sdk_metrics import WINDOW_SECONDS
from callstream.insights.state import CallState
from callstream.insights.summary import call_facts

__all__ = [
    "FEATURE_NAMES",
    "CompletionPredictor",
    "HeuristicPredictor",
    "PredictorFeatures",
    "features_from_state",
]

FEATURE_NAMES: Final = (
    "call_type_carrier",
    "call_type_sip",
    "call_type_trunking",
    "call_type_client",
    "gateway_edges",
    "gateway_edges_ended_fraction",
    "sdk_present",
    "sdk_disconnected",
    "answered",
    "since_end",
    "since_last_arrival",
    "log_records",
    "sdk_sample_coverage",
    "gateway_metric_coverage",
    "open_sdk_windows",
    "idle_ended",
)
_CALL_TYPES: Final = ("carrier", "sip", "trunking", "client")
_MAX_COVERAGE: Final = 2.0


class PredictorFeatures(msgspec.Struct, frozen=True, kw_only=True):
    """What is known about a call's telemetry at one moment after its end."""

    call_type: str
    """carrier, sip, trunking or client (as reported, else inferred from the edges seen)."""
    gateway_edges: int
    """Gateway edges that reported anything."""
    gateway_edges_ended: int
    """Gateway edges that reported a terminal event (completed, busy, ...)."""
    sdk_present: bool
    sdk_disconnected: bool
    """The SDK reported that its leg ended (disconnect, reject, ignore, cancel)."""
    answered: bool
    since_end: float
    """Seconds since callstream learned the call ended, / complete_after."""
    since_last_arrival: float
    """Seconds since the last telemetry of the call arrived, / complete_after."""
    records: int
    sdk_sample_coverage: float
    """SDK samples received / connected seconds (1.0 when there is nothing to expect);
    capped at 2."""
    gateway_metric_coverage: float
    """Gateway metric records received / (streams x connected 10-second intervals); 1.0
    when there is nothing to expect; capped at 2."""
    open_sdk_windows: int
    """SDK metric windows still waiting for samples."""
    idle_ended: bool
    """The call never reported its end; the idle timer ended it."""

    def as_vector(self) -> list[float]:
        """The features as numbers, in ``FEATURE_NAMES`` order."""
        one_hot = [1.0 if self.call_type == kind else 0.0 for kind in _CALL_TYPES]
        ended = self.gateway_edges_ended / self.gateway_edges if self.gateway_edges else 0.0
        return [
            *one_hot,
            float(self.gateway_edges),
            ended,
            float(self.sdk_present),
            float(self.sdk_disconnected),
            float(self.answered),
            self.since_end,
            self.since_last_arrival,
            math.log1p(self.records),
            self.sdk_sample_coverage,
            self.gateway_metric_coverage,
            float(self.open_sdk_windows),
            float(self.idle_ended),
        ]


class CompletionPredictor(Protocol):
    """Decides whether a call's summary will not change any more.

    A probabilistic model implements this by comparing its probability with a threshold.
    """

    def predict(self, features: PredictorFeatures) -> bool: ...


@dataclass(frozen=True, slots=True)
class HeuristicPredictor:
    """The default until a trained model ships.

    Complete when the call has been quiet for ``quiet`` (of complete_after), every edge
    reported its end, the SDK (if any) disconnected, and samples and metrics cover the
    connected time; or, whatever the rest, when it has been quiet ``give_up`` long.
    """

    quiet: float = 0.05
    give_up: float = 0.2
    coverage: float = 0.9

    def predict(self, features: PredictorFeatures) -> bool:
        if features.since_last_arrival >= self.give_up:
            return True
        if features.since_last_arrival < self.quiet or features.open_sdk_windows:
            return False
        edges_done = features.gateway_edges_ended == features.gateway_edges
        sdk_done = not features.sdk_present or features.sdk_disconnected
        covered = (
            features.sdk_sample_coverage >= self.coverage
            and features.gateway_metric_coverage >= self.coverage
        )
        return edges_done and sdk_done and covered


def features_from_state(state: CallState, now: float, complete_after: float) -> PredictorFeatures:
    """The features of ``state`` at processing time ``now``."""
    gateway = state.gateway
    edges = gateway.edges if gateway is not None else {}
    times, call_type = call_facts(state)
    connected = (
        times.end - times.answered if times.end is not None and times.answered is not None else None
    )
    samples = state.samples
    sdk = state.sdk
    scale = complete_after if complete_after > 0 else 1.0
    ended = intervals = 0
    for edge in edges.values():
        ended += edge.terminal
        if edge.inbound is not None:
            intervals += edge.inbound.intervals
        if edge.outbound is not None:
            intervals += edge.outbound.intervals
    return PredictorFeatures(
        call_type=call_type,
        gateway_edges=len(edges),
        gateway_edges_ended=ended,
        sdk_present=sdk is not None or samples is not None,
        sdk_disconnected=sdk is not None and sdk.ended is not None,
        answered=times.answered is not None,
        since_end=_since(state.ended_at, now) / scale,
        since_last_arrival=_since(state.last_arrival, now) / scale,
        records=state.records,
        sdk_sample_coverage=_coverage(
            samples.received if samples is not None else 0,
            connected if sdk is not None or samples is not None else None,
        ),
        gateway_metric_coverage=_coverage(
            intervals,
            None
            if connected is None or not edges
            else 2 * len(edges) * math.ceil(connected / WINDOW_SECONDS),
        ),
        open_sdk_windows=len(samples.windows) if samples is not None else 0,
        idle_ended=state.idle_ended,
    )


def _since(moment: float | None, now: float) -> float:
    return max(0.0, now - moment) if moment is not None else 0.0


def _coverage(received: int, expected: float | None) -> float:
    if expected is None or expected <= 0:
        return 1.0
    return min(_MAX_COVERAGE, received / expected)
