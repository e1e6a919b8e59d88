"""The per-call insight logic the engine runtime drives (``CallLogic`` in engine.py).

``apply`` turns one call's telemetry into call events and metric records as it arrives;
``fire`` handles the call's timers: SDK window flushes and the summary lifecycle.

Summary lifecycle (docs/decisions/0003-call-lifecycle.md): the end of a call becomes known
from a gateway's terminal event or the SDK's disconnect; from that moment (processing time)
the first ``partial`` is due after ``partial_after`` and the ``complete`` after
``complete_after``. In between, data that changes the summary produces another partial (at
most one per re-partial delay), and the predictor is asked periodically whether the summary
is complete (``predicted-complete``, at most once). A call whose end never comes is ended by
the idle timer. Every emitted summary takes the next ``processing_version``. After the
complete summary, late records still produce call events and metrics but no summary.

Pure: no I/O and no clock; ``now`` is the runtime's processing time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from callstream.insights import sdk_events
from callstream.insights import state as call_state
from callstream.insights.gateway import (
    GatewayFacts,
    gateway_event,
    gateway_metric,
    is_terminal,
    load_facts,
    store_facts,
)
from callstream.insights.predictor_api import (
    CompletionPredictor,
    HeuristicPredictor,
    features_from_state,
)
from callstream.insights.quality import (
    WARNING_GROUPS,
    TagThresholds,
    leave_to_sdk,
    observe,
    warning_event,
)
from callstream.insights.sdk_events import END_NAMES, SdkFacts, client_metadata, sdk_event
from callstream.insights.sdk_metrics import (
    add_samples,
    close_window,
    columns,
    next_flush,
    take_ready,
)
from callstream.insights.state import CallState
from callstream.insights.step import EngineConfig, Step
from callstream.insights.summary import digest, emit, summary_content
from callstream.model import insights as out
from callstream.model.telemetry import GatewayMetric, SdkEvent, SdkSample, TelemetryRecord

__all__ = [
    "TIMER_COMPLETE",
    "TIMER_FLUSH",
    "TIMER_IDLE",
    "TIMER_PARTIAL",
    "TIMER_PREDICT",
    "TIMER_REPARTIAL",
    "CallInsights",
]

TIMER_FLUSH: Final = "flush"
TIMER_PARTIAL: Final = "partial"
TIMER_REPARTIAL: Final = "repartial"
TIMER_PREDICT: Final = "predict"
TIMER_COMPLETE: Final = "complete"
TIMER_IDLE: Final = "idle"

MIN_IDLE: Final = 60.0
"""A call with no end is ended after max(complete_after, MIN_IDLE) without telemetry."""
MAX_REPARTIAL_DELAY: Final = 30.0
PREDICTIONS_PER_COMPLETE: Final = 60
"""The predictor is asked every complete_after / 60 (30 s with the 30-minute default)."""


class CallInsights:
    """Per-call insight logic: see the module docstring."""

    def __init__(
        self,
        config: EngineConfig,
        predictor: CompletionPredictor | None = None,
        *,
        thresholds: TagThresholds | None = None,
    ) -> None:
        self._config = config
        self._predictor: CompletionPredictor = predictor or HeuristicPredictor()
        self._thresholds = thresholds or TagThresholds()
        self._idle_after = max(config.complete_after, MIN_IDLE)
        self._repartial_after = min(max(config.partial_after, 1.0), MAX_REPARTIAL_DELAY)
        self._predict_every = max(1.0, config.complete_after / PREDICTIONS_PER_COMPLETE)
        self._timers: dict[str, Callable[[CallState, float, Step], None]] = {
            TIMER_FLUSH: self._on_flush,
            TIMER_PARTIAL: self._on_partial,
            TIMER_REPARTIAL: self._on_repartial,
            TIMER_PREDICT: self._on_predict,
            TIMER_COMPLETE: self._on_complete,
            TIMER_IDLE: self._on_idle,
        }

    # --- CallLogic -------------------------------------------------------------------------

    def new_state(self, account_sid: str, call_sid: str) -> CallState:
        return CallState(account_sid=account_sid, call_sid=call_sid)

    def encode_state(self, state: CallState) -> bytes:
        return call_state.encode(state)

    def decode_state(self, raw: bytes) -> CallState:
        return call_state.decode(raw)

    def apply(self, state: CallState, records: Sequence[TelemetryRecord], now: float) -> Step:
        """Take records of this call, in arrival order."""
        step = Step()
        events = step.events
        account_sid = state.account_sid
        ended = False
        samples: list[SdkSample] = []
        # Facts are kept encoded in the state: loaded at the batch's first event that
        # reports any, stored after its last.
        facts: GatewayFacts | None = None
        sdk_facts: SdkFacts | None = None
        for record in records:
            # Samples first: they are most of the traffic, and are taken in one go below.
            if isinstance(record, SdkSample):
                samples.append(record)
            elif isinstance(record, GatewayMetric):
                events.append(
                    gateway_metric(state.gateway or state.gateway_state(), record, account_sid)
                )
            elif isinstance(record, SdkEvent):
                if sdk_facts is None:
                    sdk_facts = sdk_events.load_facts(state.sdk_state())
                events.append(self._sdk_event(state, sdk_facts, record))
                ended = ended or (record.group == "connection" and record.name in END_NAMES)
            else:
                gateway = state.gateway_state()
                if facts is None:
                    facts = load_facts(gateway)
                events.append(gateway_event(gateway, facts, record, account_sid, state.seq))
                state.seq += 1
                ended = ended or is_terminal(record)
        if facts is not None:
            store_facts(state.gateway_state(), facts)
        if sdk_facts is not None:
            sdk_events.store_facts(state.sdk_state(), sdk_facts)
        self._arrived(state, len(records), now, step)
        if samples:
            add_samples(state.sample_state(), samples, now)
            self._emit_windows(state, now, step)
        if ended and state.ended_at is None:
            self._end(state, now, step)
        self._schedule_flush(state, step)
        return step

    def fire(self, state: CallState, kind: str, now: float) -> Step:
        """Handle a timer that came due; unknown or stale timers do nothing."""
        step = Step()
        handler = self._timers.get(kind)
        if handler is not None:
            handler(state, now, step)
        self._schedule_flush(state, step)
        return step

    # --- records ---------------------------------------------------------------------------

    def _sdk_event(self, state: CallState, facts: SdkFacts, record: SdkEvent) -> out.CallEvent:
        event = sdk_event(state.sdk_state(), facts, record, state.account_sid, state.seq)
        state.seq += 1
        if record.group in WARNING_GROUPS:
            leave_to_sdk(state.warning_state(), record.name)
        return event

    def _arrived(self, state: CallState, count: int, now: float, step: Step) -> None:
        state.records += count
        state.last_arrival = now
        if state.first_arrival is None:
            state.first_arrival = now
            # Re-armed lazily: _on_idle checks the latest arrival when it fires.
            step.timers[TIMER_IDLE] = now + self._idle_after
        if state.completed:
            state.late_records += count
        elif state.partial_sent and not state.repartial_pending:
            state.repartial_pending = True
            step.timers[TIMER_REPARTIAL] = now + self._repartial_after

    def _end(self, state: CallState, at: float, step: Step) -> None:
        state.ended_at = at
        step.timers[TIMER_PARTIAL] = at + self._config.partial_after
        step.timers[TIMER_COMPLETE] = at + self._config.complete_after
        step.timers[TIMER_IDLE] = None

    # --- SDK windows and warnings ----------------------------------------------------------

    def _emit_windows(self, state: CallState, now: float, step: Step, force: bool = False) -> None:
        samples = state.samples
        if samples is None or samples.origin is None:
            return
        ready = take_ready(samples, now, force)
        if not ready:
            return
        warnings = state.warning_state()
        metadata = _client_metadata(state)
        for window in ready:
            window_samples = columns(window.slots)
            step.events.append(
                close_window(
                    samples, window, window_samples, state.account_sid, state.call_sid, metadata
                )
            )
            for change in observe(warnings, window_samples):
                step.events.append(
                    warning_event(change, state.account_sid, state.call_sid, state.seq)
                )
                state.seq += 1

    def _schedule_flush(self, state: CallState, step: Step) -> None:
        due = next_flush(state.samples) if state.samples is not None else None
        if due != state.flush_due:
            state.flush_due = due
            step.timers[TIMER_FLUSH] = due

    # --- timers ----------------------------------------------------------------------------

    def _on_flush(self, state: CallState, now: float, step: Step) -> None:
        state.flush_due = None
        self._emit_windows(state, now, step)

    def _on_partial(self, state: CallState, now: float, step: Step) -> None:
        if state.ended_at is None or state.completed or state.partial_sent:
            return
        self._emit_windows(state, now, step, force=True)
        self._emit_summary(state, "partial", now, step)
        state.partial_sent = True
        self._schedule_prediction(state, now, step)

    def _on_repartial(self, state: CallState, now: float, step: Step) -> None:
        state.repartial_pending = False
        if not state.partial_sent or state.completed:
            return
        content = summary_content(state, self._thresholds)
        if digest(content) != state.digest:
            self._emit_summary(state, "partial", now, step, content)

    def _on_predict(self, state: CallState, now: float, step: Step) -> None:
        if state.ended_at is None or state.completed or state.predicted:
            return
        features = features_from_state(state, now, self._config.complete_after)
        if self._predictor.predict(features):
            self._emit_summary(state, "predicted-complete", now, step)
            state.predicted = True
        else:
            self._schedule_prediction(state, now, step)

    def _on_complete(self, state: CallState, now: float, step: Step) -> None:
        if state.ended_at is None or state.completed:
            return
        self._emit_windows(state, now, step, force=True)
        self._emit_summary(state, "complete", now, step)
        state.completed = True
        state.repartial_pending = False
        for kind in (TIMER_PARTIAL, TIMER_REPARTIAL, TIMER_PREDICT):
            step.timers[kind] = None

    def _on_idle(self, state: CallState, now: float, step: Step) -> None:
        if state.ended_at is not None or state.last_arrival is None:
            return
        due = state.last_arrival + self._idle_after
        if due > now:
            step.timers[TIMER_IDLE] = due
            return
        # Idle for at least complete_after: both summaries are overdue and fire next.
        state.idle_ended = True
        self._end(state, state.last_arrival, step)

    def _schedule_prediction(self, state: CallState, now: float, step: Step) -> None:
        assert state.ended_at is not None
        due = now + self._predict_every
        if not state.predicted and due < state.ended_at + self._config.complete_after:
            step.timers[TIMER_PREDICT] = due

    def _emit_summary(
        self,
        state: CallState,
        kind: out.SummaryKind,
        now: float,
        step: Step,
        content: out.CallSummary | None = None,
    ) -> None:
        if content is None:
            content = summary_content(state, self._thresholds)
        state.summaries += 1
        # No summary follows the complete one, so nothing compares with its digest.
        state.digest = b"" if kind == "complete" else digest(content)
        step.events.append(emit(content, kind, state.summaries, now))


def _client_metadata(state: CallState) -> out.ClientMetadata | None:
    """What the SDK said about itself, for its metric records."""
    if state.sdk is None:
        return None
    return client_metadata(sdk_events.load_facts(state.sdk))
