"""SDK 1-second samples grouped into 10-second ``call-metrics.sdk`` records.

Windows lie on a 10-second grid that starts at the call's first sample (the earliest of the
first batch of samples to arrive); a sample belongs to the window of its nearest whole
second. A window is emitted when it holds ten samples, when its flush time passes (window
end, or its first arrival if that is later, plus ``FLUSH_GRACE``), or when the call's summary
is due. Windows are emitted in grid order, so a full window waits behind an earlier one that
is still filling: that keeps the metric stream and the quality warnings in timestamp order. A
sample whose window was already emitted (or lies before it) counts for the summary only.

Interval aggregates: packets and bytes are summed; jitter, rtt, mos and audio levels give
min/avg/max with ``value`` = avg (Twilio's REST example ``jitter {value: 9}`` over ten
samples); loss percentage is lost / (received + lost). ``cumulative`` holds the largest
running totals (``total_*``) seen in the window.

Samples reach the call's ``SampleTotals`` (what the summary shows) when their window closes,
so each value is read once for both; late samples are added as they arrive, and
``current_totals`` adds the windows still open for a summary taken before they close.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from math import floor
from operator import attrgetter
from typing import Final, NamedTuple

import msgspec

from callstream.insights.aggregates import SCALE, Acc, Stamped, Summed, newer, summed
from callstream.insights.codecs import payload_type
from callstream.insights.gateway import loss_percentage
from callstream.model import insights as out
from callstream.model.telemetry import SdkSample

__all__ = [
    "FLUSH_GRACE",
    "SAMPLES_PER_WINDOW",
    "WINDOW_SECONDS",
    "SampleTotals",
    "SdkMetricsState",
    "Slot",
    "Window",
    "add_samples",
    "close_window",
    "current_totals",
    "next_flush",
    "take_ready",
]

WINDOW_SECONDS: Final = 10.0
SAMPLES_PER_WINDOW: Final = 10
FLUSH_GRACE: Final = 15.0
"""Longer than the SDK's 10-second posting cadence, so a sample that slipped into the next
post (timer drift) still reaches its window before the window is flushed."""


class Slot(msgspec.Struct, array_like=True, gc=False):
    """The parts of one sample a window needs, without the record's envelope."""

    ts: float
    rtt: float | None
    jitter: float
    mos: float | None
    loss: float
    bytes_received: int
    bytes_sent: int
    audio_in: float
    audio_out: float
    packets_received: int
    packets_lost: int
    packets_sent: int | None
    total_bytes_received: int
    total_bytes_sent: int
    total_packets_received: int
    total_packets_lost: int
    total_packets_sent: int
    codec: str


class Window(msgspec.Struct, array_like=True):
    index: int
    flush_at: float
    slots: list[Slot]


class SampleTotals(msgspec.Struct, array_like=True):
    """Every sample of the call, whenever it arrived: what the summary's ``sdk_edge`` shows."""

    samples: int = 0
    first: float | None = None
    last: float | None = None
    jitter: Acc = msgspec.field(default_factory=Acc)
    rtt: Acc = msgspec.field(default_factory=Acc)
    mos: Acc = msgspec.field(default_factory=Acc)
    audio_in: Acc = msgspec.field(default_factory=Acc)
    audio_out: Acc = msgspec.field(default_factory=Acc)
    packets_received: int = 0
    packets_lost: int = 0
    packets_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    codec: Stamped[str] | None = None


class SdkMetricsState(msgspec.Struct, array_like=True):
    origin: float | None = None
    last_emitted: int | None = None
    windows: list[Window] = []
    totals: SampleTotals = msgspec.field(default_factory=SampleTotals)
    received: int = 0
    late_samples: int = 0


def add_samples(state: SdkMetricsState, samples: Sequence[SdkSample], now: float) -> None:
    """Put each sample in its window; one whose window is gone counts for the summary only."""
    slots = [_slot(sample) for sample in samples]
    state.received += len(slots)
    if state.origin is None:
        state.origin = min(map(_TS, slots))
    origin = state.origin
    last_emitted = state.last_emitted
    window: Window | None = None
    late: list[Slot] = []
    for slot in slots:
        index = floor(slot.ts - origin + 0.5) // SAMPLES_PER_WINDOW
        if last_emitted is not None and index <= last_emitted:
            late.append(slot)
            continue
        if window is None or window.index != index:
            window = _window(state, index, now)
        window.slots.append(slot)
    if late:
        state.late_samples += len(late)
        _accumulate(state.totals, late)


def take_ready(state: SdkMetricsState, now: float, force: bool = False) -> list[Window]:
    """Remove and return the windows due now, in grid order, each with its samples in
    timestamp order; ``force`` takes all of them. Close each with ``close_window``."""
    ready: list[Window] = []
    windows = state.windows
    while windows:
        first = windows[0]
        if not (force or len(first.slots) >= SAMPLES_PER_WINDOW or first.flush_at <= now):
            break
        ready.append(windows.pop(0))
        first.slots.sort(key=_by_time)
        state.last_emitted = first.index
    return ready


def next_flush(state: SdkMetricsState) -> float | None:
    """When the first waiting window must be flushed; None when none waits."""
    return state.windows[0].flush_at if state.windows else None


def close_window(
    state: SdkMetricsState,
    window: Window,
    account_sid: str,
    call_sid: str,
    metadata: out.ClientMetadata | None,
) -> out.CallMetric:
    """Add a window from ``take_ready`` to the call's totals and return its metric record."""
    assert state.origin is not None
    slots = window.slots
    columns = _accumulate(state.totals, slots)
    start = state.origin + window.index * WINDOW_SECONDS
    codec = slots[-1].codec
    return out.CallMetric(
        account_sid=account_sid,
        call_sid=call_sid,
        time=datetime.fromtimestamp(start + WINDOW_SECONDS, UTC),
        window_start=datetime.fromtimestamp(start, UTC),
        edge="sdk_edge",
        direction="both",
        codec=payload_type(codec),
        codec_name=codec.lower(),
        interval=_interval(slots, columns),
        cumulative=_cumulative(slots),
        client_metadata=metadata,
    )


def current_totals(state: SdkMetricsState) -> SampleTotals:
    """The call's totals with the samples of windows still open (a copy when there are any)."""
    if not state.windows:
        return state.totals
    totals = _copy_decoder.decode(_copy_encoder.encode(state.totals))
    for window in state.windows:
        _accumulate(totals, window.slots)
    return totals


_copy_encoder: Final = msgspec.msgpack.Encoder()
_copy_decoder: Final = msgspec.msgpack.Decoder(SampleTotals)


def _by_time(slot: Slot) -> float:
    return slot.ts


def _slot(s: SdkSample) -> Slot:
    return Slot(
        s.timestamp.timestamp(),
        s.rtt,
        s.jitter,
        s.mos,
        s.packets_lost_fraction,
        s.bytes_received,
        s.bytes_sent,
        s.audio_level_in,
        s.audio_level_out,
        s.packets_received,
        s.packets_lost,
        s.packets_sent,
        s.total_bytes_received,
        s.total_bytes_sent,
        s.total_packets_received,
        s.total_packets_lost,
        s.total_packets_sent,
        s.audio_codec,
    )


def _window(state: SdkMetricsState, index: int, now: float) -> Window:
    windows = state.windows
    # Samples nearly always land in the newest window; search from the end.
    position = len(windows)
    while position and windows[position - 1].index >= index:
        if windows[position - 1].index == index:
            return windows[position - 1]
        position -= 1
    assert state.origin is not None
    end = state.origin + (index + 1) * WINDOW_SECONDS
    window = Window(index, max(now, end) + FLUSH_GRACE, [])
    windows.insert(position, window)
    return window


_TS = attrgetter("ts")
_JITTER = attrgetter("jitter")
_RTT = attrgetter("rtt")
_MOS = attrgetter("mos")
_AUDIO_IN = attrgetter("audio_in")
_AUDIO_OUT = attrgetter("audio_out")
_RECEIVED = attrgetter("packets_received")
_LOST = attrgetter("packets_lost")
_SENT = attrgetter("packets_sent")
_BYTES_RECEIVED = attrgetter("bytes_received")
_BYTES_SENT = attrgetter("bytes_sent")
_TOTAL_RECEIVED = attrgetter("total_packets_received")
_TOTAL_LOST = attrgetter("total_packets_lost")
_TOTAL_SENT = attrgetter("total_packets_sent")
_TOTAL_BYTES_RECEIVED = attrgetter("total_bytes_received")
_TOTAL_BYTES_SENT = attrgetter("total_bytes_sent")


class _Columns(NamedTuple):
    """A batch's measures, each as (count, sum, min, max) in millionths, or None if absent."""

    jitter: Summed | None
    rtt: Summed | None
    mos: Summed | None
    audio_in: Summed | None
    audio_out: Summed | None


def _accumulate(totals: SampleTotals, slots: list[Slot]) -> _Columns:
    """Add samples to the totals; return the per-measure sums for the window's own record."""
    # Column by column with C-level map/min/max: far cheaper than one call per sample.
    totals.samples += len(slots)
    times = list(map(_TS, slots))
    first, last = min(times), max(times)
    if totals.first is None or first < totals.first:
        totals.first = first
    if totals.last is None or last > totals.last:
        totals.last = last
    columns = _Columns(
        jitter=summed(map(_JITTER, slots)),
        rtt=summed(v for v in map(_RTT, slots) if v is not None),
        mos=summed(v for v in map(_MOS, slots) if v is not None),
        audio_in=summed(map(_AUDIO_IN, slots)),
        audio_out=summed(map(_AUDIO_OUT, slots)),
    )
    totals.jitter.merge(columns.jitter)
    totals.rtt.merge(columns.rtt)
    totals.mos.merge(columns.mos)
    totals.audio_in.merge(columns.audio_in)
    totals.audio_out.merge(columns.audio_out)
    totals.packets_received = max(totals.packets_received, *map(_TOTAL_RECEIVED, slots))
    totals.packets_lost = max(totals.packets_lost, *map(_TOTAL_LOST, slots))
    totals.packets_sent = max(totals.packets_sent, *map(_TOTAL_SENT, slots))
    totals.bytes_received = max(totals.bytes_received, *map(_TOTAL_BYTES_RECEIVED, slots))
    totals.bytes_sent = max(totals.bytes_sent, *map(_TOTAL_BYTES_SENT, slots))
    for slot in slots:
        if slot.ts == last and newer(totals.codec, last, slot.codec):
            totals.codec = (last, slot.codec)
    return columns


def _interval(slots: Sequence[Slot], columns: _Columns) -> out.Metrics:
    received = sum(map(_RECEIVED, slots))
    lost = sum(map(_LOST, slots))
    sent = [v for v in map(_SENT, slots) if v is not None]
    return out.Metrics(
        packets_received=received,
        packets_sent=sum(sent) if sent else None,
        packets_lost=lost,
        packets_loss_percentage=loss_percentage(lost, received),
        bytes_received=sum(map(_BYTES_RECEIVED, slots)),
        bytes_sent=sum(map(_BYTES_SENT, slots)),
        jitter=_stats(columns.jitter),
        rtt=_stats(columns.rtt),
        mos=_stats(columns.mos),
        audio_in=_stats(columns.audio_in),
        audio_out=_stats(columns.audio_out),
    )


def _cumulative(slots: Sequence[Slot]) -> out.Metrics:
    received = max(map(_TOTAL_RECEIVED, slots))
    lost = max(map(_TOTAL_LOST, slots))
    return out.Metrics(
        packets_received=received,
        packets_sent=max(map(_TOTAL_SENT, slots)),
        packets_lost=lost,
        packets_loss_percentage=loss_percentage(lost, received),
        bytes_received=max(map(_TOTAL_BYTES_RECEIVED, slots)),
        bytes_sent=max(map(_TOTAL_BYTES_SENT, slots)),
    )


def _stats(column: Summed | None) -> out.MetricStats | None:
    if column is None:
        return None
    count, total, lo, hi = column
    avg = round(total / count / SCALE, 2)
    return out.MetricStats(min=round(lo / SCALE, 2), max=round(hi / SCALE, 2), avg=avg, value=avg)
