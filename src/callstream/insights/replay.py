"""Deterministic replay: drive the per-call logic with recorded or simulated arrivals.

``Replay`` plays the part of the engine runtime (``insights/engine.py``) on a simulated
clock: it takes ``(processing time, account, record)`` arrivals in order, fires every timer
the logic sets at exactly its due time (in due order, before any later arrival), and hands
each emitted event to a callback. No sleeps and no wall clock, so the same arrivals always
give the same events, in the same order, at the same times. It is what the predictor is
trained and evaluated on, and what tests and benchmarks use to run traffic through
``CallInsights`` without a store.

This module also reconstructs arrival histories (from the simulator or from a data
directory's telemetry log) and, on top of a replay, records the labelled checkpoints the
completion predictor learns from and measures a predictor against the complete summaries.
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from typing import Any, Final, NamedTuple

import msgspec

from callstream.insights.call import TIMER_PREDICT, CallInsights
from callstream.insights.engine import CallLogic, record_key
from callstream.insights.predictor_api import (
    CompletionPredictor,
    PredictorFeatures,
    features_from_state,
)
from callstream.insights.quality import TagThresholds
from callstream.insights.state import CallState
from callstream.insights.step import EngineConfig, Step
from callstream.insights.summary import digest, summary_content
from callstream.model.insights import CallSummary, InsightEvent
from callstream.model.telemetry import TelemetryRecord
from callstream.sim import SimConfig, Simulation
from callstream.store.interfaces import CallKey, TelemetryLog

__all__ = [
    "SIM_ACCOUNT",
    "CallRecord",
    "Checkpoint",
    "CheckpointRecorder",
    "Emitted",
    "Evaluation",
    "NeverPredictor",
    "PredictorFigures",
    "Replay",
    "ReplayArrival",
    "Scenario",
    "collect_checkpoints",
    "content_digest",
    "evaluate",
    "figures_from_checkpoints",
    "log_pages",
    "replay",
    "simulated_arrivals",
    "true_ends",
]

SIM_ACCOUNT: Final = "AC" + "5" * 32
"""The account simulated traffic is replayed under (the simulator's records carry none)."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
LOG_PAGE: Final = 256
"""Chunks read at once (an ingest request stores one per partition it touches)."""
PROGRESS_EVERY: Final = 10_000
"""Arrivals between two progress reports."""


class ReplayArrival(NamedTuple):
    """One record as it reached callstream: processing time (Unix seconds) and account."""

    at: float
    account_sid: str
    record: TelemetryRecord


class Emitted(NamedTuple):
    """One event the logic emitted, with the simulated processing time it was emitted at."""

    at: float
    call: CallKey
    event: InsightEvent


EventSink = Callable[[Emitted], None]
TimerHook = Callable[[CallKey, Any, str, float], None]
"""Called just before a timer fires: (call, its state, timer kind, processing time)."""


class Replay:
    """The engine runtime on a simulated clock, for one process's worth of calls.

    Records of one call that arrive at the same instant, one after another, reach the
    logic in one ``apply`` (as a sensor's batch does in the engine). A timer due at the
    same instant as an arrival fires after it, as in the engine, which applies a step's
    records before its due timers. A record whose id the call has already applied (a
    sensor's retry) is skipped, as the engine skips it.
    """

    def __init__(
        self,
        logic: CallLogic,
        on_event: EventSink | None = None,
        *,
        before_timer: TimerHook | None = None,
    ) -> None:
        self._logic = logic
        self._on_event = on_event
        self._before_timer = before_timer
        self.states: dict[CallKey, Any] = {}
        self._seen: dict[CallKey, set[int]] = {}
        self.clock = -math.inf
        # (due, tie-breaker, call, kind); an entry is live only while _live holds its seq.
        self._heap: list[tuple[float, int, CallKey, str]] = []
        self._live: dict[tuple[CallKey, str], int] = {}
        self._seq = count()
        self.fired: list[tuple[float, CallKey, str]] | None = None
        """When set to a list, every timer fired is appended to it (for tests)."""

    def feed(self, arrivals: Iterable[ReplayArrival]) -> None:
        """Apply arrivals in order, firing the timers that fall due between them."""
        batch: list[TelemetryRecord] = []
        batch_key: CallKey | None = None
        batch_at = 0.0
        for at, account_sid, record in arrivals:
            key = (account_sid, record.call_sid)
            if batch and (key != batch_key or at != batch_at):
                assert batch_key is not None
                self._apply(batch_key, batch, batch_at)
                batch = []
            batch.append(record)
            batch_key, batch_at = key, at
        if batch:
            assert batch_key is not None
            self._apply(batch_key, batch, batch_at)

    def run_timers(self, until: float = math.inf) -> None:
        """Fire every timer due at or before ``until``, in due order."""
        heap, live = self._heap, self._live
        while heap and heap[0][0] <= until:
            due, seq, key, kind = heapq.heappop(heap)
            if live.get((key, kind)) != seq:
                continue  # rescheduled or cancelled since
            del live[(key, kind)]
            self.clock = max(self.clock, due)
            state = self.states[key]
            if self._before_timer is not None:
                self._before_timer(key, state, kind, self.clock)
            if self.fired is not None:
                self.fired.append((self.clock, key, kind))
            self._take(key, self._logic.fire(state, kind, self.clock))

    def run(self, arrivals: Iterable[ReplayArrival]) -> None:
        """Apply every arrival, then let every timer run out."""
        self.feed(arrivals)
        self.run_timers()

    @property
    def pending_timers(self) -> int:
        return len(self._live)

    def _apply(self, key: CallKey, records: Sequence[TelemetryRecord], at: float) -> None:
        # Strictly earlier timers first; one due exactly now fires after the records.
        self.run_timers(math.nextafter(at, -math.inf))
        self.clock = max(self.clock, at)
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = self._logic.new_state(*key)
        fresh = self._fresh(key, records)
        if fresh:
            self._take(key, self._logic.apply(state, fresh, self.clock))

    def _fresh(self, key: CallKey, records: Sequence[TelemetryRecord]) -> list[TelemetryRecord]:
        seen = self._seen.setdefault(key, set())
        fresh = []
        for record in records:
            id_key = record_key(record.id)
            if id_key not in seen:
                seen.add(id_key)
                fresh.append(record)
        return fresh

    def _take(self, key: CallKey, step: Step) -> None:
        if self._on_event is not None:
            for event in step.events:
                self._on_event(Emitted(self.clock, key, event))
        for kind, due in step.timers.items():
            if due is None:
                self._live.pop((key, kind), None)
                continue
            seq = next(self._seq)
            self._live[(key, kind)] = seq
            heapq.heappush(self._heap, (due, seq, key, kind))


def replay(logic: CallLogic, arrivals: Iterable[ReplayArrival]) -> list[Emitted]:
    """Every event ``logic`` emits for ``arrivals``, with every timer run out."""
    emitted: list[Emitted] = []
    Replay(logic, emitted.append).run(arrivals)
    return emitted


# --- arrival histories ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    """A simulated workload and the summary timers it is replayed with.

    ``compress`` divides the simulator's arrival offsets; the timers should be shortened
    by the same factor (docs/ingest.md), which ``engine_config`` does for ``partial_after``.
    """

    calls: int
    seed: int
    complete_after: float = 1800.0
    compress: float = 1.0
    concurrency: float = 50.0
    partial_after: float = 10.0

    def sim_config(self) -> SimConfig:
        return SimConfig(
            calls=self.calls, concurrency=self.concurrency, seed=self.seed, compress=self.compress
        )

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            partial_after=self.partial_after / self.compress, complete_after=self.complete_after
        )

    def describe(self) -> dict[str, float | int]:
        return {
            "calls": self.calls,
            "seed": self.seed,
            "complete_after": self.complete_after,
            "compress": self.compress,
            "concurrency": self.concurrency,
        }


def simulated_arrivals(
    config: SimConfig, account_sid: str = SIM_ACCOUNT
) -> Iterator[ReplayArrival]:
    """The simulator's traffic as arrivals, on a clock that starts at ``config.start``."""
    base = config.start.timestamp()
    for offset, record in Simulation(config):
        yield ReplayArrival(base + offset, account_sid, record)


def true_ends(config: SimConfig, account_sid: str = SIM_ACCOUNT) -> dict[CallKey, float]:
    """When each simulated call really ended, on the arrivals' (compressed) clock."""
    base = config.start.timestamp()
    return {
        (account_sid, plan.call_sid): base + plan.ended / config.compress
        for plan in Simulation(config).plans()
    }


async def log_pages(log: TelemetryLog, page: int = LOG_PAGE) -> AsyncIterator[list[ReplayArrival]]:
    """A telemetry log's records as they arrived, ``page`` chunks at a time: offset order,
    stamped with ``received_at``.

    Records of one append share its ``received_at``; a clock that stepped back between
    appends is smoothed by never letting time go backwards.
    """
    decoder = msgspec.msgpack.Decoder(list[TelemetryRecord])
    after = 0
    latest = -math.inf
    while True:
        entries = await log.read_all(after, page)
        if not entries:
            return
        arrivals: list[ReplayArrival] = []
        for entry in entries:
            latest = max(latest, entry.received_at)
            account_sid = entry.account_sid
            arrivals.extend(
                ReplayArrival(latest, account_sid, record) for record in decoder.decode(entry.body)
            )
        yield arrivals
        after = entries[-1].offset


# --- labelled checkpoints -------------------------------------------------------------------


class NeverPredictor:
    """Never says complete, so the engine asks at every prediction time until the end."""

    def predict(self, features: PredictorFeatures) -> bool:
        return False


def content_digest(summary: CallSummary) -> bytes:
    """The digest of what a summary says, whatever its kind, version and time."""
    content = msgspec.structs.replace(
        summary, time=_EPOCH, kind="partial", processing_state="partial", processing_version=0
    )
    return digest(content)


@dataclass(slots=True)
class Checkpoint:
    """One moment the engine asks its predictor about a call, and what it would emit then.

    ``final`` is set once the call's complete summary is out: whether the summary content
    at this moment equals it, i.e. whether a predicted-complete emitted here was right.
    """

    at: float
    features: PredictorFeatures
    digest: bytes
    final: bool | None = None


@dataclass(slots=True)
class CallRecord:
    """Everything a replay learned about one call's summaries."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    ended_at: float | None = None
    complete_at: float | None = None


class CheckpointRecorder:
    """A replay that records a checkpoint at each prediction time and labels each call's
    checkpoints when its complete summary comes out.

    Its logic's predictor never says yes, so the engine asks at every prediction time until
    the complete summary. A predictor that says yes changes nothing before it does (the
    content and the timer schedule are the same), so these checkpoints tell what any
    predictor would have emitted. Arrivals may be fed in pieces.
    """

    def __init__(self, config: EngineConfig, thresholds: TagThresholds | None = None) -> None:
        self._config = config
        self._thresholds = thresholds or TagThresholds()
        self._calls: dict[CallKey, CallRecord] = {}
        logic = CallInsights(config, NeverPredictor(), thresholds=self._thresholds)
        self._replay = Replay(logic, self._on_event, before_timer=self._before_timer)

    def feed(self, arrivals: Iterable[ReplayArrival]) -> None:
        self._replay.feed(arrivals)

    def finish(self, horizon: float = math.inf) -> dict[CallKey, CallRecord]:
        """Run the timers up to ``horizon``; the calls whose complete summary came by then.

        A call completed only after the horizon may still be missing telemetry that was
        on its way when the history ends, so its labels could not be trusted.
        """
        self._replay.run_timers(horizon)
        for key, state in self._replay.states.items():
            record = self._calls.get(key)
            if record is not None:
                record.ended_at = state.ended_at
        return {key: rec for key, rec in self._calls.items() if rec.complete_at is not None}

    def _before_timer(self, key: CallKey, state: CallState, kind: str, now: float) -> None:
        if kind != TIMER_PREDICT or state.completed or state.ended_at is None:
            return
        # The same features and content the engine's own prediction step would use.
        features = features_from_state(state, now, self._config.complete_after)
        content = summary_content(state, self._thresholds)
        record = self._calls.setdefault(key, CallRecord())
        record.checkpoints.append(Checkpoint(now, features, digest(content)))

    def _on_event(self, emitted: Emitted) -> None:
        event = emitted.event
        if not isinstance(event, CallSummary) or event.kind != "complete":
            return
        record = self._calls.setdefault(emitted.call, CallRecord())
        final = content_digest(event)
        record.complete_at = emitted.at
        for checkpoint in record.checkpoints:
            checkpoint.final = checkpoint.digest == final


def collect_checkpoints(
    config: EngineConfig,
    arrivals: Iterable[ReplayArrival],
    *,
    thresholds: TagThresholds | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[CallKey, CallRecord]:
    """Replay ``arrivals`` to the end; per call that reached its complete summary, the
    labelled checkpoints at every time the engine would have asked its predictor."""
    recorder = CheckpointRecorder(config, thresholds)
    recorder.feed(_counted(arrivals, progress))
    return recorder.finish()


def _counted(
    arrivals: Iterable[ReplayArrival], progress: Callable[[int], None] | None
) -> Iterator[ReplayArrival]:
    if progress is None:
        yield from arrivals
        return
    for n, arrival in enumerate(arrivals, 1):
        yield arrival
        if n % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)


# --- evaluation -----------------------------------------------------------------------------


class PredictorFigures(msgspec.Struct, frozen=True, kw_only=True):
    """How one predictor did on one replayed workload.

    Times are seconds on the replay's processing clock. "After end" counts from the call's
    real end where the simulator knows it, else from when callstream learned of it.
    """

    calls: int
    """Calls that reached their complete summary."""
    predicted: int
    """Calls that got a predicted-complete summary."""
    correct: int
    """... whose content equals the complete summary's."""
    precision: float
    coverage: float
    """predicted / calls."""
    median_after_end: float
    p90_after_end: float
    """Of the predicted-complete emissions."""
    median_after_end_all: float
    """Over every call, counting a call never predicted at its complete summary."""
    median_lead: float
    p90_lead: float
    """How long before the complete summary the prediction came."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    scenario: dict[str, float | int]
    figures: dict[str, PredictorFigures]


def figures_from_checkpoints(
    calls: dict[CallKey, CallRecord],
    predictor: CompletionPredictor,
    ends: dict[CallKey, float] | None = None,
) -> PredictorFigures:
    """What ``predictor`` would have emitted on these calls: the first checkpoint it says
    yes at is its predicted-complete summary."""
    ends = ends or {}
    after: list[float] = []
    after_all: list[float] = []
    lead: list[float] = []
    correct = 0
    for key, record in calls.items():
        assert record.complete_at is not None
        end = ends.get(key, record.ended_at if record.ended_at is not None else record.complete_at)
        hit = next((c for c in record.checkpoints if predictor.predict(c.features)), None)
        if hit is None:
            after_all.append(record.complete_at - end)
            continue
        correct += bool(hit.final)
        after.append(hit.at - end)
        after_all.append(hit.at - end)
        lead.append(record.complete_at - hit.at)
    predicted = len(after)
    return PredictorFigures(
        calls=len(calls),
        predicted=predicted,
        correct=correct,
        precision=correct / predicted if predicted else math.nan,
        coverage=predicted / len(calls) if calls else math.nan,
        median_after_end=_quantile(after, 0.5),
        p90_after_end=_quantile(after, 0.9),
        median_after_end_all=_quantile(after_all, 0.5),
        median_lead=_quantile(lead, 0.5),
        p90_lead=_quantile(lead, 0.9),
    )


def evaluate(
    scenario: Scenario,
    predictors: dict[str, CompletionPredictor],
    *,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Replay a simulated workload once and measure each predictor on it."""
    sim = scenario.sim_config()
    calls = collect_checkpoints(
        scenario.engine_config(), simulated_arrivals(sim), progress=progress
    )
    ends = true_ends(sim)
    return Evaluation(
        scenario=scenario.describe(),
        figures={
            name: figures_from_checkpoints(calls, predictor, ends)
            for name, predictor in predictors.items()
        },
    )


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]
