"""The engine runtime: one worker per partition, telemetry in, insight events out.

Each worker owns its partition (DESIGN.md: one owner per partition, records of a
call in arrival order). A step reads a batch of telemetry and the timers that
are due, runs the call logic on each call touched, and commits the new cursor,
call states, timers and events together, so a crash replays the step and
nothing is lost or half-done.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec
import structlog

from callstream.insights.step import Step
from callstream.model.insights import InsightEvent
from callstream.model.telemetry import TelemetryRecord
from callstream.store.interfaces import (
    CallKey,
    EngineStore,
    LogEntry,
    OutputEvent,
    PartitionCommit,
    TelemetryLog,
    Timer,
)

log = structlog.get_logger(__name__)

BATCH_RECORDS = 2000
BATCH_TIMERS = 500
# How long an idle worker sleeps before it looks again (a timer or an append wakes it sooner).
MAX_IDLE = 1.0


class CallLogic(Protocol):
    """The per-call insight logic the runtime drives (``callstream.insights.call``)."""

    def new_state(self, account_sid: str, call_sid: str) -> Any: ...
    def decode_state(self, raw: bytes) -> Any: ...
    def encode_state(self, state: Any) -> bytes: ...
    def apply(self, state: Any, records: Sequence[TelemetryRecord], now: float) -> Step: ...
    def fire(self, state: Any, kind: str, now: float) -> Step: ...


_record_decoder = msgspec.msgpack.Decoder(TelemetryRecord)
_event_encoder = msgspec.msgpack.Encoder()


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


def output_event(event: InsightEvent) -> OutputEvent:
    """An insight event as the events log keeps it (canonical, msgpack)."""
    assert event.call_sid is not None
    return OutputEvent(
        account_sid=event.account_sid,
        call_sid=event.call_sid,
        type=event.event_type,
        identity=event.identity,
        time=event.time.timestamp(),
        body=_event_encoder.encode(event),
    )


class PartitionWorker:
    def __init__(
        self,
        partition: int,
        log: TelemetryLog,
        store: EngineStore,
        logic: CallLogic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.partition = partition
        self._log = log
        self._store = store
        self._logic = logic
        self._clock = clock
        self.cursor = 0
        self.processed = 0

    async def run(self, stopping: asyncio.Event) -> None:
        self.cursor = await self._store.cursor(self.partition)
        failures = 0
        while not stopping.is_set():
            try:
                worked = await self.step()
            except Exception:
                # Nothing of a failed step was committed; it is retried from the same
                # cursor, with backoff so a persistent fault does not spin.
                failures += 1
                log.exception("engine step failed", partition=self.partition, failures=failures)
                await _sleep_unless(stopping, min(30.0, 0.1 * 2 ** min(failures, 9)))
                continue
            failures = 0
            if not worked:
                await self._idle(stopping)

    async def step(self) -> bool:
        """Process one batch of telemetry and due timers; False when there was nothing."""
        entries = await self._log.read(self.partition, self.cursor, BATCH_RECORDS)
        now = self._clock()
        timers = await self._store.due_timers(self.partition, now, BATCH_TIMERS)
        if not entries and not timers:
            return False
        commit = await self._run(entries, timers, now)
        await self._store.commit(commit)
        if commit.cursor is not None:
            self.cursor = commit.cursor
        self.processed += len(entries)
        return True

    async def _idle(self, stopping: asyncio.Event) -> None:
        next_due = await self._store.next_due(self.partition)
        timeout = MAX_IDLE
        if next_due is not None:
            timeout = min(MAX_IDLE, max(0.0, next_due - self._clock()))
        if timeout <= 0:
            return
        waiter = asyncio.ensure_future(self._log.wait(self.partition, self.cursor, timeout))
        stopper = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stopper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(
        self, entries: Sequence[LogEntry], timers: Sequence[Timer], now: float
    ) -> PartitionCommit:
        by_call: dict[CallKey, list[TelemetryRecord]] = {}
        for entry in entries:
            record = _record_decoder.decode(entry.body)
            by_call.setdefault((entry.account_sid, record.call_sid), []).append(record)
        timers_by_call: dict[CallKey, list[Timer]] = {}
        for timer in timers:
            timers_by_call.setdefault((timer.account_sid, timer.call_sid), []).append(timer)
        keys = list(by_call.keys() | timers_by_call.keys())
        stored = await self._store.load_calls(self.partition, keys)

        states: dict[CallKey, bytes] = {}
        events: list[OutputEvent] = []
        timers_set: list[Timer] = []
        timers_cancelled: list[Timer] = []
        for key in keys:
            raw = stored.get(key)
            state = (
                self._logic.decode_state(raw) if raw is not None else self._logic.new_state(*key)
            )
            step = Step()
            if key in by_call:
                step.merge(self._logic.apply(state, by_call[key], now))
            for timer in timers_by_call.get(key, ()):
                step.merge(self._logic.fire(state, timer.kind, now))
            states[key] = self._logic.encode_state(state)
            events.extend(output_event(e) for e in step.events)
            for kind, due in step.timers.items():
                timer = Timer(key[0], key[1], kind, due if due is not None else 0.0)
                (timers_set if due is not None else timers_cancelled).append(timer)
        return PartitionCommit(
            partition=self.partition,
            cursor=entries[-1].offset if entries else None,
            calls=states,
            events=events,
            timers_done=list(timers),
            timers_cancelled=timers_cancelled,
            timers_set=timers_set,
        )


class Engine:
    """All partition workers of one process."""

    def __init__(
        self,
        log: TelemetryLog,
        store: EngineStore,
        logic: CallLogic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.workers = [PartitionWorker(p, log, store, logic, clock) for p in range(log.partitions)]
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(w.run(self._stopping), name=f"engine-{w.partition}")
            for w in self.workers
        ]

    async def stop(self) -> None:
        """Let each worker finish the step it is in, then return."""
        self._stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def processed(self) -> int:
        return sum(w.processed for w in self.workers)
