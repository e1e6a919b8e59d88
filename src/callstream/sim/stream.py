"""One call's telemetry as a lazy stream of deliveries in the order its sensors send them.

A delivery is what one sensor posts at once: a single event, a gateway edge's inbound and
outbound metric samples, or a batch of up to ten SDK samples (twilio-voice.js posts its
1-second samples ten at a time). Media is generated one 10-second tick at a time, so a long
call holds at most a tick of records in memory.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import datetime
from itertools import count
from random import Random
from typing import Final

from callstream.model.telemetry import TelemetryRecord
from callstream.sim.calls import CallPlan, TrafficMix
from callstream.sim.context import CallContext
from callstream.sim.delivery import DeliveryModel, SourceDelivery
from callstream.sim.gateway import GatewayRecords, MediaWindow
from callstream.sim.profiles import NetworkPath
from callstream.sim.sdk import QualityMonitor, SdkRecords

__all__ = ["Delivery", "call_stream"]

Delivery = tuple[float, float | None, tuple[TelemetryRecord, ...]]
"""(sent, arrival or None when lost, records), times in simulation seconds."""

TICK: Final = 10.0  # gateway metric interval and SDK sample batch size, seconds
_MIN_FINAL_TICK: Final = 0.5  # a shorter remainder at hang-up carries no sample
_DELIVERY_SALT: Final = 0x9E3779B97F4A7C15  # keeps delivery draws apart from call content


class _Outbox:
    """Deliveries generated but not yet due, released in send order."""

    def __init__(self, ctx: CallContext, model: DeliveryModel) -> None:
        self._pending: list[tuple[float, int, Delivery]] = []
        self._seq = count()
        self._model = model
        # Delivery luck has its own stream so the late-arrival model can change without
        # changing any call's content.
        self._rng = Random(ctx.plan.seed ^ _DELIVERY_SALT)
        self._end = ctx.plan.ended
        self._poor = ctx.profile.poor

    def post(
        self, sent: float, source: SourceDelivery, records: tuple[TelemetryRecord, ...]
    ) -> None:
        arrival = self._model.arrival(source, self._rng, sent, self._end, self._poor)
        heapq.heappush(self._pending, (sent, next(self._seq), (sent, arrival, records)))

    def due(self, until: float) -> Iterator[Delivery]:
        pending = self._pending
        while pending and pending[0][0] <= until:
            yield heapq.heappop(pending)[2]


def call_stream(
    plan: CallPlan, epoch: datetime, mix: TrafficMix, model: DeliveryModel
) -> Iterator[Delivery]:
    """Every delivery of one call, in non-decreasing send time."""
    ctx = CallContext(plan, epoch, mix)
    gateway = GatewayRecords(ctx)
    sdk = SdkRecords(ctx, gateway.dead) if plan.call_type == "client" else None
    outbox = _Outbox(ctx, model)
    for t, gateway_event in gateway.progress():
        outbox.post(t, model.gateway_event, (gateway_event,))
    if sdk is not None:
        for t, sdk_event in sdk.lifecycle():
            outbox.post(t, model.sdk_event, (sdk_event,))
    if plan.has_media:
        for tick_end in _media(ctx, gateway, sdk, outbox, model):
            yield from outbox.due(tick_end)
    yield from outbox.due(float("inf"))


def _media(
    ctx: CallContext,
    gateway: GatewayRecords,
    sdk: SdkRecords | None,
    outbox: _Outbox,
    model: DeliveryModel,
) -> Iterator[float]:
    """Generate media tick by tick, posting its deliveries; yield each tick's end."""
    plan = ctx.plan
    assert plan.answered is not None  # only answered calls have media
    start, end = plan.answered, plan.ended
    path = NetworkPath(ctx.profile, ctx.rng)
    # A good network never crosses a warning threshold, so its SDK is not watched at all.
    watched = sdk is not None and sdk.publishes_warnings and ctx.profile.poor
    monitor = QualityMonitor(start) if watched else None
    outage = sdk.reconnect if sdk is not None else None
    impaired = plan.edges[0]
    second = 0  # samples are taken at whole seconds after the answer
    tick_start = start
    while end - tick_start >= _MIN_FINAL_TICK:
        tick_end = min(tick_start + TICK, end)
        window = MediaWindow()
        batch = []
        if sdk is None:
            path.step(tick_end - tick_start)
            window.add(path.jitter, path.loss, path.latency, tick_end - tick_start)
        while sdk is not None and start + second + 1 <= tick_end:
            second += 1
            t = start + second
            path.step()
            dark = outage is not None and outage[0] <= t < outage[1]
            window.add(path.jitter, 100.0 if dark else path.loss, path.latency)
            sample = sdk.sample(t, path, dark)
            batch.append(sample)
            if monitor is not None:
                for at, group, name, level, payload in monitor.observe(t, sample):
                    warning = sdk.event(at, group, name, level, payload)
                    outbox.post(at, model.sdk_event, (warning[1],))
        for edge in plan.edges:
            pair = gateway.metrics(
                edge, tick_end, tick_end - tick_start, window if edge == impaired else None
            )
            outbox.post(tick_end, model.gateway_metric, pair)
        if batch:
            outbox.post(tick_end, model.sdk_sample, tuple(batch))
        yield tick_end
        tick_start = tick_end
