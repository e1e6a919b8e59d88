"""Simulated traffic (callstream.sim) through CallInsights, driven as the engine runtime drives
it: arrivals in batches, each call's records in arrival order, due timers fired earliest first,
states stored encoded between steps."""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache

from callstream.insights.call import CallInsights
from callstream.insights.step import EngineConfig, Step
from callstream.model.insights import CallEvent, CallMetric, CallSummary, InsightEvent
from callstream.model.telemetry import GatewayEvent, GatewayMetric, SdkEvent, TelemetryRecord
from callstream.sim.calls import CallPlan
from callstream.sim.generator import SimConfig, Simulation
from tests.unit.test_insights_builders import ACCOUNT

BATCH_SECONDS = 5.0
QUALITY_TAGS = {"high_jitter", "high_packet_loss", "high_latency", "low_mos"}


@dataclass
class Runtime:
    """A single-partition stand-in for engine.PartitionWorker, in memory."""

    logic: CallInsights
    states: dict[str, bytes] = field(default_factory=dict)
    due: dict[tuple[str, str], float] = field(default_factory=dict)
    heap: list[tuple[float, str, str]] = field(default_factory=list)
    events: dict[str, list[InsightEvent]] = field(default_factory=lambda: defaultdict(list))

    def step(self, records: list[TelemetryRecord], now: float) -> None:
        by_call: dict[str, list[TelemetryRecord]] = defaultdict(list)
        for record in records:
            by_call[record.call_sid].append(record)
        fired: dict[str, list[str]] = defaultdict(list)
        while self.heap and self.heap[0][0] <= now:
            when, sid, kind = heapq.heappop(self.heap)
            if self.due.get((sid, kind)) == when:
                del self.due[(sid, kind)]
                fired[sid].append(kind)
        for sid in by_call.keys() | fired.keys():
            raw = self.states.get(sid)
            state = self.logic.decode_state(raw) if raw else self.logic.new_state(ACCOUNT, sid)
            steps: list[Step] = []
            if sid in by_call:
                steps.append(self.logic.apply(state, by_call[sid], now))
            steps += [self.logic.fire(state, kind, now) for kind in fired[sid]]
            for step in steps:
                self.events[sid].extend(step.events)
                for kind, when in step.timers.items():
                    if when is None:
                        self.due.pop((sid, kind), None)
                    else:
                        self.due[(sid, kind)] = when
                        heapq.heappush(self.heap, (when, sid, kind))
            self.states[sid] = self.logic.encode_state(state)

    def drain(self) -> None:
        while self.heap:
            self.step([], self.heap[0][0])


@dataclass(frozen=True)
class Run:
    plans: dict[str, CallPlan]
    records: dict[str, list[TelemetryRecord]]
    events: dict[str, list[InsightEvent]]


def _batches(simulation: Simulation) -> Iterator[tuple[float, list[TelemetryRecord]]]:
    start = simulation.config.start.timestamp()
    batch: list[TelemetryRecord] = []
    edge = BATCH_SECONDS
    for offset, record in simulation:
        if offset >= edge and batch:
            yield start + edge, batch
            batch = []
            edge = (offset // BATCH_SECONDS + 1) * BATCH_SECONDS
        batch.append(record)
    if batch:
        yield start + edge, batch


@cache
def _run() -> Run:
    simulation = Simulation(SimConfig(calls=40, concurrency=8, seed=11))
    runtime = Runtime(CallInsights(EngineConfig(partial_after=10, complete_after=300)))
    records: dict[str, list[TelemetryRecord]] = defaultdict(list)
    for now, batch in _batches(simulation):
        for record in batch:
            records[record.call_sid].append(record)
        runtime.step(batch, now)
    runtime.drain()
    plans = {plan.call_sid: plan for plan in simulation.plans()}
    return Run(plans, dict(records), dict(runtime.events))


def test_every_call_gets_exactly_one_complete_summary_last() -> None:
    run = _run()
    assert len(run.records) >= 35  # a few calls may lose all their telemetry in transit
    for sid, events in run.events.items():
        summaries = [e for e in events if isinstance(e, CallSummary)]
        assert [s.kind for s in summaries].count("complete") == 1, sid
        assert summaries[-1].kind == "complete"
        assert [s.processing_version for s in summaries] == list(range(1, len(summaries) + 1))
        assert summaries[0].kind == "partial"


def test_one_call_event_per_event_record_and_one_metric_per_gateway_metric() -> None:
    run = _run()
    for sid, records in run.records.items():
        events = [e for e in run.events[sid] if isinstance(e, CallEvent)]
        # The engine's own warnings carry no SDK metadata; every SDK event record does.
        from_records = [e for e in events if e.sdk is None or e.sdk.metadata is not None]
        reported = [r for r in records if isinstance(r, GatewayEvent | SdkEvent)]
        assert Counter((e.group, e.name, e.time) for e in from_records) == Counter(
            (r.group, r.name, r.timestamp) for r in reported
        )
        gateway_metrics = [
            e for e in run.events[sid] if isinstance(e, CallMetric) and e.edge != "sdk_edge"
        ]
        assert len(gateway_metrics) == sum(isinstance(r, GatewayMetric) for r in records)


def test_summaries_agree_with_the_simulated_calls() -> None:
    run = _run()
    for sid, events in run.events.items():
        plan = run.plans[sid]
        complete = next(e for e in events if isinstance(e, CallSummary) and e.kind == "complete")
        assert complete.call_type == plan.call_type
        if plan.call_type == "client":
            assert complete.sdk_edge is not None


def test_good_network_calls_get_no_quality_tags_or_warnings() -> None:
    run = _run()
    good = [sid for sid in run.events if run.plans[sid].profile == "good"]
    assert good
    for sid in good:
        complete = next(
            e for e in run.events[sid] if isinstance(e, CallSummary) and e.kind == "complete"
        )
        assert not QUALITY_TAGS & set(complete.tags), (sid, complete.tags)
        network = [
            e
            for e in run.events[sid]
            if isinstance(e, CallEvent) and e.group.startswith("network-quality-warning")
        ]
        assert network == [], sid
