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

Samples are nearly half of all telemetry. A sample is kept as a plain tuple (``Slot``) and a
closed window is read column by column (``Columns``, one ``zip``), so that sums, minima and
maxima run in C rather than once per sample in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from math import floor
from operator import attrgetter, itemgetter
from typing import Any, Final, NamedTuple, TypeAlias

import msgspec

from callstream.insights.aggregates import (
    Acc,
    Stamped,
    newer,
)
from callstream.insights.codecs import payload_type
from callstream.insights.gateway import loss_percentage
from callstream.model import insights as out
from callstream.model.telemetry import SdkSample

__all__ = [
    "FLUSH_GRACE",
    "SAMPLES_PER_WINDOW",
    "WINDOW_SECONDS",
    "Columns",
    "SampleTotals",
    "SdkMetricsState",
    "Slot",
    "Window",
    "add_samples",
    "close_window",
    "current_totals",
    "first_sample_time",
    "next_flush",
    "take_ready",
]

WINDOW_SECONDS: Final = 10.0
SAMPLES_PER_WINDOW: Final = 10
FLUSH_GRACE: Final = 15.0
"""Longer than the SDK's 10-second posting cadence, so a sample that slipped into the next
post (timer drift) still reaches its window before the window is flushed."""

Slot: TypeAlias = tuple[
    float,  # ts: the sample's timestamp, Unix seconds
    float | None,  # rtt
    float,  # jitter
    float | None,  # mos
    float,  # loss: packets_lost_fraction
    int,  # bytes_received
    int,  # bytes_sent
    float,  # audio_in
    float,  # audio_out
    int,  # packets_received
    int,  # packets_lost
    int | None,  # packets_sent
    int,  # total_bytes_received
    int,  # total_bytes_sent
    int,  # total_packets_received
    int,  # total_packets_lost
    int,  # total_packets_sent
    str,  # codec
]
"""The parts of one sample a window needs, without the record's envelope, in ``Columns``
order."""


class Columns(NamedTuple):
    """A window's samples column by column, in ``Slot`` order (``columns``)."""

    ts: tuple[float, ...]
    rtt: tuple[float | None, ...]
    jitter: tuple[float, ...]
    mos: tuple[float | None, ...]
    loss: tuple[float, ...]
    bytes_received: tuple[int, ...]
    bytes_sent: tuple[int, ...]
    audio_in: tuple[float, ...]
    audio_out: tuple[float, ...]
    packets_received: tuple[int, ...]
    packets_lost: tuple[int, ...]
    packets_sent: tuple[int | None, ...]
    total_bytes_received: tuple[int, ...]
    total_bytes_sent: tuple[int, ...]
    total_packets_received: tuple[int, ...]
    total_packets_lost: tuple[int, ...]
    total_packets_sent: tuple[int, ...]
    codec: tuple[str, ...]


def columns(slots: Iterable[Slot]) -> Columns:
    """Samples column by column (at least one sample)."""
    return Columns._make(zip(*slots, strict=True))


# What a slot takes from its sample after the timestamp, in Slot order.
_SAMPLE_VALUES: Final = attrgetter(
    "rtt",
    "jitter",
    "mos",
    "packets_lost_fraction",
    "bytes_received",
    "bytes_sent",
    "audio_level_in",
    "audio_level_out",
    "packets_received",
    "packets_lost",
    "packets_sent",
    "total_bytes_received",
    "total_bytes_sent",
    "total_packets_received",
    "total_packets_lost",
    "total_packets_sent",
    "audio_codec",
)
_TS: Final = itemgetter(0)


class Window(msgspec.Struct, array_like=True, gc=False):
    index: int
    flush_at: float
    slots: list[Slot]


class SampleTotals(msgspec.Struct, array_like=True, gc=False):
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


class SdkMetricsState(msgspec.Struct, array_like=True, gc=False):
    origin: float | None = None
    last_emitted: int | None = None
    windows: list[Window] = []
    totals: SampleTotals = msgspec.field(default_factory=SampleTotals)
    received: int = 0
    late_samples: int = 0


def add_samples(state: SdkMetricsState, samples: Sequence[SdkSample], now: float) -> None:
    """Put each sample in its window; one whose window is gone counts for the summary only."""
    slots: list[Slot] = [(s.timestamp.timestamp(), *_SAMPLE_VALUES(s)) for s in samples]
    state.received += len(slots)
    if state.origin is None:
        state.origin = min(map(_TS, slots))
    origin = state.origin
    last_emitted = state.last_emitted
    window: Window | None = None
    late: list[Slot] = []
    for slot in slots:
        index = floor(slot[0] - origin + 0.5) // SAMPLES_PER_WINDOW
        if last_emitted is not None and index <= last_emitted:
            late.append(slot)
            continue
        if window is None or window.index != index:
            window = _window(state, index, now)
        window.slots.append(slot)
    if late:
        state.late_samples += len(late)
        _accumulate(state.totals, columns(late))


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
        first.slots.sort(key=_TS)
        state.last_emitted = first.index
    return ready


def next_flush(state: SdkMetricsState) -> float | None:
    """When the first waiting window must be flushed; None when none waits."""
    return state.windows[0].flush_at if state.windows else None


def close_window(
    state: SdkMetricsState,
    window: Window,
    samples: Columns,
    account_sid: str,
    call_sid: str,
    metadata: out.ClientMetadata | None,
) -> out.CallMetric:
    """Add a window from ``take_ready`` (its samples given as ``columns(window.slots)``) to the
    call's totals and return its metric record."""
    assert state.origin is not None
    totals = state.totals
    top = _note_counts(totals, samples)
    start = state.origin + window.index * WINDOW_SECONDS
    codec = samples.codec[-1]
    received = sum(samples.packets_received)
    lost = sum(samples.packets_lost)
    sent = _present(samples.packets_sent)
    return out.CallMetric(
        account_sid=account_sid,
        call_sid=call_sid,
        time=datetime.fromtimestamp(start + WINDOW_SECONDS, UTC),
        window_start=datetime.fromtimestamp(start, UTC),
        edge="sdk_edge",
        direction="both",
        codec=payload_type(codec),
        codec_name=codec.lower(),
        interval=out.Metrics(
            packets_received=received,
            packets_sent=sum(sent) if sent else None,
            packets_lost=lost,
            packets_loss_percentage=loss_percentage(lost, received),
            bytes_received=sum(samples.bytes_received),
            bytes_sent=sum(samples.bytes_sent),
            jitter=totals.jitter.add_window(samples.jitter),
            rtt=totals.rtt.add_window(_present(samples.rtt)),
            mos=totals.mos.add_window(_present(samples.mos)),
            audio_in=totals.audio_in.add_window(samples.audio_in),
            audio_out=totals.audio_out.add_window(samples.audio_out),
        ),
        cumulative=out.Metrics(
            packets_received=top.packets_received,
            packets_sent=top.packets_sent,
            packets_lost=top.packets_lost,
            packets_loss_percentage=loss_percentage(top.packets_lost, top.packets_received),
            bytes_received=top.bytes_received,
            bytes_sent=top.bytes_sent,
        ),
        client_metadata=metadata,
    )


def current_totals(state: SdkMetricsState) -> SampleTotals:
    """The call's totals with the samples of windows still open (a copy when there are any)."""
    if not state.windows:
        return state.totals
    totals = _copy_decoder.decode(_copy_encoder.encode(state.totals))
    for window in state.windows:
        _accumulate(totals, columns(window.slots))
    return totals


def first_sample_time(state: SdkMetricsState) -> float | None:
    """The earliest sample's time, windows still open included (``current_totals().first``
    without adding the windows up); None when there is no sample."""
    first = state.totals.first if state.totals.samples else None
    for window in state.windows:
        earliest = min(map(_TS, window.slots))
        if first is None or earliest < first:
            first = earliest
    return first


_copy_encoder: Final = msgspec.msgpack.Encoder()
_copy_decoder: Final = msgspec.msgpack.Decoder(SampleTotals)


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


class _Top(NamedTuple):
    """The largest running totals (``total_*``) of a batch of samples."""

    packets_received: int
    packets_lost: int
    packets_sent: int
    bytes_received: int
    bytes_sent: int


def _accumulate(totals: SampleTotals, samples: Columns) -> None:
    """Add samples to the totals."""
    _note_counts(totals, samples)
    totals.jitter.add_all(samples.jitter)
    totals.rtt.add_all(_present(samples.rtt))
    totals.mos.add_all(_present(samples.mos))
    totals.audio_in.add_all(samples.audio_in)
    totals.audio_out.add_all(samples.audio_out)


def _note_counts(totals: SampleTotals, samples: Columns) -> _Top:
    """Add samples to the totals, all but their measures (``Acc``); return their largest
    running totals."""
    times = samples.ts
    totals.samples += len(times)
    first, last = min(times), max(times)
    if totals.first is None or first < totals.first:
        totals.first = first
    if totals.last is None or last > totals.last:
        totals.last = last
    top = _Top(
        max(samples.total_packets_received),
        max(samples.total_packets_lost),
        max(samples.total_packets_sent),
        max(samples.total_bytes_received),
        max(samples.total_bytes_sent),
    )
    if top.packets_received > totals.packets_received:
        totals.packets_received = top.packets_received
    if top.packets_lost > totals.packets_lost:
        totals.packets_lost = top.packets_lost
    if top.packets_sent > totals.packets_sent:
        totals.packets_sent = top.packets_sent
    if top.bytes_received > totals.bytes_received:
        totals.bytes_received = top.bytes_received
    if top.bytes_sent > totals.bytes_sent:
        totals.bytes_sent = top.bytes_sent
    # The codec of the latest sample (by its encoding if several share that time).
    if times.count(last) == 1:
        latest: Sequence[str] = (samples.codec[times.index(last)],)
    else:
        latest = [codec for ts, codec in zip(times, samples.codec, strict=True) if ts == last]
    for codec in latest:
        if newer(totals.codec, last, codec):
            totals.codec = (last, codec)
    return top


def _present(values: tuple[Any, ...]) -> Sequence[Any]:
    """The values that were measured (nearly always all of them)."""
    if None in values:
        return [v for v in values if v is not None]
    return values
