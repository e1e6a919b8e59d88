"""When simulated telemetry reaches callstream: the late-arrival model.

Every delivery (one POST by a sensor: a gateway event, a gateway's pair of 10-second metric
samples, one SDK event, or a batch of up to ten SDK samples) is either lost, with probability
``drop``, or arrives after a delay drawn from a mixture of log-normal components:

    arrival = sent + transit + D,   transit ~ U(20 ms, 300 ms),   D ~ LogNormal(ln median, sigma)

A component marked ``after_call_end`` models data a client holds back and uploads after the
call (an app in the background, a browser tab that reconnects): its delay counts from the
later of the send time and the call's end. Delays are capped at ``max_delay`` seconds.
Calls on a poor network profile multiply ``drop`` and the shares of every component but the
first by ``poor_network_factor``: the same network that hurts the audio delays the uploads.

The predictor of summary completeness is trained on this distribution, so it is data here
(``DEFAULT_DELIVERY``) and documented in docs/ingest.md, not buried in code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from random import Random
from typing import Final

__all__ = ["DEFAULT_DELIVERY", "DelayComponent", "DeliveryModel", "SourceDelivery"]


@dataclass(frozen=True, slots=True)
class DelayComponent:
    share: float
    """Probability that a delivery's delay comes from this component."""
    median: float
    """Median delay, seconds."""
    sigma: float
    """Log-normal shape: larger is a heavier tail."""
    after_call_end: bool = False


@dataclass(frozen=True, slots=True)
class SourceDelivery:
    """How one sensor's deliveries travel."""

    drop: float
    components: tuple[DelayComponent, ...]

    def __post_init__(self) -> None:
        total = sum(c.share for c in self.components)
        if not self.components or not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"component shares must sum to 1, not {total}")

    def pick(self, draw: float, factor: float) -> DelayComponent:
        """The component a uniform ``draw`` selects when late shares are scaled by ``factor``.

        The late components grow by ``factor``; the first (prompt) one absorbs the difference.
        """
        components = self.components
        late = (1.0 - components[0].share) * factor
        draw -= max(0.0, 1.0 - late)
        if draw < 0:
            return components[0]
        for component in components[1:]:
            draw -= component.share * factor
            if draw < 0:
                return component
        return components[-1]


@dataclass(frozen=True, slots=True)
class DeliveryModel:
    gateway_event: SourceDelivery
    gateway_metric: SourceDelivery
    sdk_event: SourceDelivery
    sdk_sample: SourceDelivery
    poor_network_factor: float = 2.0
    max_delay: float = 1200.0
    transit: tuple[float, float] = (0.02, 0.3)

    def arrival(
        self, source: SourceDelivery, rng: Random, sent: float, call_end: float, poor: bool
    ) -> float | None:
        """Arrival time (same clock as ``sent``) of one delivery, or None if it is lost."""
        factor = self.poor_network_factor if poor else 1.0
        if rng.random() < source.drop * factor:
            return None
        component = source.pick(rng.random(), factor)
        delay = component.median * math.exp(component.sigma * rng.gauss())
        base = max(sent, call_end) if component.after_call_end else sent
        low, high = self.transit
        arrival = base + low + (high - low) * rng.random() + delay
        return min(arrival, sent + self.max_delay)


DEFAULT_DELIVERY: Final = DeliveryModel(
    gateway_event=SourceDelivery(
        drop=0.001,
        components=(DelayComponent(0.97, 1.5, 0.6), DelayComponent(0.03, 45.0, 0.8)),
    ),
    gateway_metric=SourceDelivery(
        drop=0.002,
        components=(DelayComponent(0.95, 3.0, 0.5), DelayComponent(0.05, 60.0, 0.8)),
    ),
    sdk_event=SourceDelivery(
        drop=0.01,
        components=(
            DelayComponent(0.88, 0.8, 0.7),
            DelayComponent(0.09, 20.0, 1.0),
            DelayComponent(0.03, 180.0, 0.9, after_call_end=True),
        ),
    ),
    sdk_sample=SourceDelivery(
        drop=0.015,
        components=(
            DelayComponent(0.85, 1.0, 0.6),
            DelayComponent(0.10, 20.0, 1.0),
            DelayComponent(0.05, 180.0, 0.9, after_call_end=True),
        ),
    ),
)
