"""Call quality: the SDK's network and audio warnings, and the summary's tags.

Warnings follow twilio-voice.js's StatsMonitor as it stands (reference §5), applied to the
1-second samples in timestamp order: each rule looks at the last ``samples`` samples; a
warning is raised once until cleared; it is cleared no sooner than ``WARNING_TIMEOUT`` after
it was raised; a null value in the window means no decision; nothing is decided in the first
``METRICS_DELAY`` of the call's samples. Once the SDK reports a warning name itself, the
engine leaves that name to the SDK.

Tags follow Twilio's tag table (reference §4.3) with the choices recorded in
docs/decisions/0003-call-lifecycle.md.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter, sub
from typing import Final, Literal, NamedTuple, get_args

import msgspec

from callstream.insights.sdk_metrics import Slot
from callstream.model import insights as out

__all__ = [
    "METRICS_DELAY",
    "NULL",
    "STATS",
    "WARNING_GROUPS",
    "WARNING_RULES",
    "WARNING_TIMEOUT",
    "Streams",
    "TagThresholds",
    "WarningChange",
    "WarningRule",
    "WarningState",
    "call_tags",
    "leave_to_sdk",
    "observe",
    "warning_event",
]

Stat = Literal[
    "rtt", "jitter", "mos", "loss", "bytes_received", "bytes_sent", "audio_in", "audio_out"
]
Test = Literal["above", "below", "average_above", "deviation_below"]

STATS: Final[tuple[Stat, ...]] = get_args(Stat)
"""The sample measures the rules read, in the order ``WarningState.history`` packs them."""
NULL: Final = -1.0
"""Stands for a missing value in ``history``: no measure is ever negative."""
_NULLABLE: Final = frozenset({"rtt", "mos"})
_ROW: Final = attrgetter(*STATS)
_COLUMN: Final = {stat: i for i, stat in enumerate(STATS)}

HISTORY: Final = 10
"""The StatsMonitor keeps the last 10 samples: max(5, every rule's own sample count)."""
WARNING_TIMEOUT: Final = 5.0
METRICS_DELAY: Final = 5.0


@dataclass(frozen=True, slots=True)
class WarningRule:
    """One StatsMonitor threshold.

    ``above``/``below``: raised when at least ``raise_count`` of the last ``samples`` values
    cross ``threshold``, cleared when at most ``clear_count`` do. ``average_above``: raised
    when their average exceeds ``threshold``, cleared at or below ``clear_threshold``.
    ``deviation_below``: raised when their standard deviation is below ``threshold``, cleared
    otherwise. The average and deviation rules wait for a full window.
    """

    name: str
    stat: Stat
    test: Test
    threshold: float
    samples: int = HISTORY
    raise_count: int = 3
    clear_count: int = 0
    clear_threshold: float = 0.0
    audio: bool = False
    raised_level: out.Level = "WARNING"

    @property
    def group(self) -> str:
        return "audio-level-warning" if self.audio else "network-quality-warning"


WARNING_RULES: Final[tuple[WarningRule, ...]] = (
    WarningRule("high-rtt", "rtt", "above", 400),
    WarningRule("high-jitter", "jitter", "above", 30),
    WarningRule("low-mos", "mos", "below", 3),
    WarningRule("high-packet-loss", "loss", "above", 1),
    WarningRule(
        "high-packets-lost-fraction", "loss", "average_above", 3, samples=7, clear_threshold=1
    ),
    WarningRule("low-bytes-received", "bytes_received", "below", 1, samples=3, clear_count=2),
    WarningRule("low-bytes-sent", "bytes_sent", "below", 1, samples=3, clear_count=2),
    WarningRule("constant-audio-input-level", "audio_in", "deviation_below", 327.67, audio=True),
    # The SDK posts this one at INFO "to avoid false positives" (reference §2.4).
    WarningRule(
        "constant-audio-output-level",
        "audio_out",
        "deviation_below",
        327.67,
        audio=True,
        raised_level="INFO",
    ),
)
_RULE_NAMES: Final = frozenset(rule.name for rule in WARNING_RULES)
WARNING_GROUPS: Final = frozenset(
    f"{prefix}-warning-{change}"
    for prefix in ("network-quality", "audio-level")
    for change in ("raised", "cleared")
)


class WarningState(msgspec.Struct, array_like=True):
    """The last ``HISTORY`` samples' measures and the warnings raised.

    ``history`` packs, oldest sample first, one row of ``STATS`` float64 values per sample,
    ``NULL`` for a missing value: the largest part of an SDK call's state kept as 640 bytes
    instead of hundreds of Python objects.
    """

    history: bytes = b""
    origin: float | None = None
    active: dict[str, float] = {}
    sdk_owned: list[str] = []


class WarningChange(NamedTuple):
    rule: WarningRule
    raised: bool
    timestamp: float
    metric: out.MetricData


_ORDER: Final = {rule.name: i for i, rule in enumerate(WARNING_RULES)}


def leave_to_sdk(state: WarningState, name: str) -> None:
    """The SDK reported ``name`` itself: stop deciding it, and forget our own raise of it
    (the SDK's own clear will end it; a clear from us would contradict the SDK)."""
    if name in _RULE_NAMES and name not in state.sdk_owned:
        state.sdk_owned.append(name)
        state.active.pop(name, None)


def observe(state: WarningState, slots: Sequence[Slot]) -> list[WarningChange]:
    """Add samples (in timestamp order) and return the warnings they raise or clear.

    Rule by rule over the whole batch: a rule that is not raised and whose threshold no value
    crosses is settled at once, which is nearly every rule of nearly every window.
    """
    if not slots:
        return []
    if state.origin is None:
        state.origin = slots[0].ts
    rows = array("d", state.history)
    for slot in slots:
        rows.extend([NULL if v is None else v for v in _ROW(slot)])
    width = len(STATS)
    changes: list[WarningChange] = []
    for rule in WARNING_RULES:
        if rule.name in state.sdk_owned:
            continue
        column = rows[_COLUMN[rule.stat] :: width].tolist()
        if rule.name not in state.active and _quiet(rule, column):
            continue
        _follow(state, rule, column, slots, changes)
    state.history = rows[-HISTORY * width :].tobytes()
    # The SDK evaluates every rule on each sample in turn; keep its order.
    changes.sort(key=lambda c: (c.timestamp, _ORDER[c.rule.name]))
    return changes


def warning_event(
    change: WarningChange, account_sid: str, call_sid: str, seq: int
) -> out.CallEvent:
    rule = change.rule
    return out.CallEvent(
        account_sid=account_sid,
        call_sid=call_sid,
        time=datetime.fromtimestamp(change.timestamp, UTC),
        seq=seq,
        edge="sdk_edge",
        group=f"{rule.group}-{'raised' if change.raised else 'cleared'}",
        name=rule.name,
        level=rule.raised_level if change.raised else "INFO",
        sdk=out.SdkEventData(metric=change.metric),
    )


def _quiet(rule: WarningRule, column: list[float]) -> bool:
    """Whether no window ending in the batch can raise ``rule`` (one that is not raised).

    Cheap bounds over the whole column, tried cheapest first; when they cannot tell, the
    rule is followed sample by sample. A bound over the column holds for every window in it.
    """
    values = [v for v in column if v != NULL] if rule.stat in _NULLABLE else column
    if not values:
        return True
    threshold = rule.threshold
    if rule.test == "above":
        return max(values) <= threshold or (
            len([v for v in values if v > threshold]) < rule.raise_count
        )
    if rule.test == "below":
        return min(values) >= threshold or (
            len([v for v in values if v < threshold]) < rule.raise_count
        )
    if rule.test == "average_above":
        # Values are never negative, so no window sums to more than the column.
        return sum(values) <= threshold * rule.samples
    # deviation_below: a window with two neighbours at least _jump apart deviates at least
    # ``threshold``; quiet when every run of samples - 1 neighbour pairs holds such a step.
    steps = map(abs, map(sub, values[1:], values))
    return bytes(rule.samples - 1) not in bytes(map(_jump(rule).__le__, steps))


def _jump(rule: WarningRule) -> float:
    """Neighbours this far apart mean a deviation of at least ``threshold``: n values
    spanning a range r deviate by at least r / sqrt(2n)."""
    return rule.threshold * math.sqrt(2 * rule.samples)


def _follow(
    state: WarningState,
    rule: WarningRule,
    column: list[float],
    slots: Sequence[Slot],
    changes: list[WarningChange],
) -> None:
    """Decide ``rule`` sample by sample over the batch (the end of ``column``)."""
    assert state.origin is not None
    first = len(column) - len(slots)
    for offset, slot in enumerate(slots):
        if slot.ts - state.origin < METRICS_DELAY:
            continue
        end = first + offset + 1
        values = column[max(0, end - rule.samples) : end]
        if NULL in values:
            continue
        decision = _decide(rule, values)
        if decision is None:
            continue
        raised_at = state.active.get(rule.name)
        if decision and raised_at is None:
            state.active[rule.name] = slot.ts
        elif not decision and raised_at is not None and slot.ts - raised_at >= WARNING_TIMEOUT:
            del state.active[rule.name]
        else:
            continue
        changes.append(WarningChange(rule, decision, slot.ts, _metric(rule, values)))


def _decide(rule: WarningRule, values: list[float]) -> bool | None:
    """True to raise, False to clear, None when the values decide neither."""
    threshold = rule.threshold
    if rule.test == "above" or rule.test == "below":
        if rule.test == "above":
            count = len([v for v in values if v > threshold])
        else:
            count = len([v for v in values if v < threshold])
        if count >= rule.raise_count:
            return True
        return False if count <= rule.clear_count else None
    if len(values) < rule.samples:
        return None
    if rule.test == "average_above":
        average = sum(values) / len(values)
        if average > threshold:
            return True
        return False if average <= rule.clear_threshold else None
    return _deviation_below(values, threshold)


def _deviation_below(values: list[float], threshold: float) -> bool:
    # The standard deviation of n values spanning a range r lies between r / sqrt(2n) and
    # r / 2, so the range alone settles most windows without computing it.
    spread = max(values) - min(values)
    if spread < 2 * threshold:
        return True
    if spread >= threshold * math.sqrt(2 * len(values)):
        return False
    return _std_dev(values) < threshold


def _std_dev(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def _metric(rule: WarningRule, values: list[float]) -> out.MetricData:
    if rule.test == "deviation_below":
        return out.MetricData(threshold=rule.threshold, values=(round(_std_dev(values), 2),))
    return out.MetricData(threshold=rule.threshold, values=tuple(round(v, 2) for v in values))


# --- tags ---------------------------------------------------------------------------------------


class TagThresholds(msgspec.Struct, frozen=True, kw_only=True):
    """Summary tag thresholds (reference §4.3); comparison operators as in the decision record."""

    jitter_avg_ms: float = 5.0
    """high_jitter: average jitter reaches this (>=) ..."""
    jitter_max_ms: float = 30.0
    """... and maximum jitter reaches this (>=)."""
    delayed_packet_ms: float = 200.0
    """high_jitter also: a delay-variation percentile of 99 or more reaches this (>=)."""
    packet_loss_percent: float = 5.0
    """high_packet_loss: loss above this (>)."""
    gateway_latency_ms: float = 150.0
    """high_latency at a gateway: average RTP traversal time above this (>)."""
    sdk_rtt_ms: float = 400.0
    """high_latency at the SDK: average round-trip time above this (>)."""
    sdk_mos: float = 3.5
    """low_mos: average MOS below this (<)."""
    pdd_ms: int = 6000
    """high_pdd: post-dial delay above this (>); Twilio's per-country p95 is not public."""


class Streams(NamedTuple):
    """The summary metrics of one edge (either may be missing)."""

    inbound: out.Metrics | None
    outbound: out.Metrics | None


_TAG_ORDER: Final = {tag: i for i, tag in enumerate(get_args(out.CallTag))}


def call_tags(
    thresholds: TagThresholds,
    *,
    gateway: Iterable[Streams],
    sdk: out.Metrics | None,
    answered: bool,
    pdd_ms: int | None,
    ice_failure: bool,
) -> tuple[out.CallTag, ...]:
    """The call's tags, in the order of Twilio's tag table."""
    tags: set[out.CallTag] = set()
    for streams in gateway:
        if answered and _silent(streams):
            tags.add("silence")
        for metrics in streams:
            if metrics is not None:
                tags.update(_stream_tags(thresholds, metrics))
                if metrics.latency is not None and _above(
                    metrics.latency.avg, thresholds.gateway_latency_ms
                ):
                    tags.add("high_latency")
    if sdk is not None:
        tags.update(_stream_tags(thresholds, sdk))
        if sdk.rtt is not None and _above(sdk.rtt.avg, thresholds.sdk_rtt_ms):
            tags.add("high_latency")
        if sdk.mos is not None and sdk.mos.avg is not None and sdk.mos.avg < thresholds.sdk_mos:
            tags.add("low_mos")
        if answered and sdk.packets_received == 0:
            tags.add("silence")
    if pdd_ms is not None and pdd_ms > thresholds.pdd_ms:
        tags.add("high_pdd")
    if ice_failure:
        tags.add("ice_failure")
    return tuple(sorted(tags, key=_TAG_ORDER.__getitem__))


def _silent(streams: Streams) -> bool:
    """Nothing received at an edge that carried media: no inbound stream, or an empty one."""
    inbound, outbound = streams
    if inbound is None:
        return outbound is not None
    return inbound.packets_received == 0


def _stream_tags(thresholds: TagThresholds, metrics: out.Metrics) -> set[out.CallTag]:
    tags: set[out.CallTag] = set()
    jitter = metrics.jitter
    if jitter is not None and (
        jitter.avg is not None
        and jitter.max is not None
        and jitter.avg >= thresholds.jitter_avg_ms
        and jitter.max >= thresholds.jitter_max_ms
    ):
        tags.add("high_jitter")
    if _delayed(metrics.packet_delay_variation, thresholds.delayed_packet_ms):
        tags.add("high_jitter")
    if _above(metrics.packets_loss_percentage, thresholds.packet_loss_percent):
        tags.add("high_packet_loss")
    return tags


def _delayed(percentiles: Mapping[str, int] | None, limit: float) -> bool:
    """Whether 1 % or more of packets were delayed by ``limit`` ms or more (d99 and up)."""
    if percentiles is None:
        return False
    return any(int(key[1:]) >= 99 and delay >= limit for key, delay in percentiles.items())


def _above(value: float | None, limit: float) -> bool:
    return value is not None and value > limit
