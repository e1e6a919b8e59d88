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
from itertools import accumulate, chain
from operator import sub
from typing import Any, Final, Literal, NamedTuple, get_args

import msgspec

from callstream.insights.sdk_metrics import Columns
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
"""The sample measures the rules read (``Columns`` members of the same names), in the order
``WarningState.history`` packs them."""
NULL: Final = -1.0
"""Stands for a missing value in ``history``: no measure is ever negative."""
_NULLABLE: Final[frozenset[Stat]] = frozenset({"rtt", "mos"})
_COLUMN: Final = {stat: i for i, stat in enumerate(STATS)}
_NULLABLE_COLUMNS: Final = frozenset(_COLUMN[stat] for stat in _NULLABLE)
# The measures are Columns members in STATS order, from this one on.
_FIRST_STAT: Final = Columns._fields.index(STATS[0])
assert Columns._fields[_FIRST_STAT : _FIRST_STAT + len(STATS)] == STATS

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


class WarningState(msgspec.Struct, array_like=True, gc=False):
    """The last ``HISTORY`` samples' measures and the warnings raised.

    ``history`` packs one column of float64 values per measure of ``STATS``, in that order,
    each holding the same number of samples, oldest first, ``NULL`` for a missing value: the
    largest part of an SDK call's state kept as 640 bytes instead of hundreds of Python
    objects.
    """

    history: bytes = b""
    origin: float | None = None
    active: dict[str, float] = {}
    sdk_owned: list[str] = []
    calm: bool = True
    """Every value in ``history`` lies within ``CALM`` (an empty history does)."""


class WarningChange(NamedTuple):
    rule: WarningRule
    raised: bool
    timestamp: float
    metric: out.MetricData


_ORDER: Final = {rule.name: i for i, rule in enumerate(WARNING_RULES)}


def _calm_ranges() -> dict[Stat, tuple[float, float]]:
    """For each measure a threshold rule reads, the values that can raise none of its rules."""
    ranges: dict[Stat, tuple[float, float]] = {}
    for rule in WARNING_RULES:
        low, high = ranges.get(rule.stat, (-math.inf, math.inf))
        if rule.test == "above":
            high = min(high, rule.threshold)
        elif rule.test == "average_above":
            # Kept clear of the threshold so that no rounding of an average reaches it.
            high = min(high, rule.threshold * (1 - 1e-9))
        elif rule.test == "below":
            low = max(low, rule.threshold)
        else:
            continue
        ranges[rule.stat] = (low, high)
    return ranges


CALM: Final = _calm_ranges()
"""Per measure, the (low, high) range in which no value raises an above, below or average
rule: a window whose values all lie within (a missing value does too) needs only the other
rules looked at, unless some warning is raised (it may clear)."""
_CALM_RULES: Final = tuple(
    rule for rule in WARNING_RULES if rule.stat not in CALM or rule.test == "deviation_below"
)
# CALM as _calm reads it: (position in Columns, may be missing, low or None, high or None).
_CALM_CHECKS: Final = tuple(
    (
        Columns._fields.index(stat),
        stat in _NULLABLE,
        None if low == -math.inf else low,
        None if high == math.inf else high,
    )
    for stat, (low, high) in CALM.items()
)


def leave_to_sdk(state: WarningState, name: str) -> None:
    """The SDK reported ``name`` itself: stop deciding it, and forget our own raise of it
    (the SDK's own clear will end it; a clear from us would contradict the SDK)."""
    if name in _RULE_NAMES and name not in state.sdk_owned:
        state.sdk_owned.append(name)
        state.active.pop(name, None)


def observe(state: WarningState, samples: Columns) -> list[WarningChange]:
    """Add samples (in timestamp order) and return the warnings they raise or clear.

    Rule by rule over the whole batch: a rule that is not raised and whose threshold no value
    crosses is settled at once, which is nearly every rule of nearly every window. Most
    windows are calm (``CALM``: no value here or in the history near any threshold, no
    warning raised), and then only the rules without a threshold are looked at. Otherwise
    the cheapest bounds (``_clearly_quiet``) are taken on the packed history and the batch as
    they are, and a measure's values are gathered into one list only for a rule they do not
    settle.
    """
    times = samples.ts
    if not times:
        return []
    if state.origin is None:
        state.origin = times[0]
    kept = array("d", state.history)
    depth = len(kept) // len(STATS)
    owned, active = state.sdk_owned, state.active
    calm = _calm(samples)
    everything = not (calm and state.calm and not active)
    columns: dict[Stat, list[float]] = {}
    changes: list[WarningChange] = []
    for rule in WARNING_RULES if everything else _CALM_RULES:
        name = rule.name
        if name in owned:
            continue
        stat = rule.stat
        values = getattr(samples, stat)
        start = _COLUMN[stat] * depth
        raised = name in active
        if not raised and everything and _clearly_quiet(rule, kept[start : start + depth], values):
            continue
        column = columns.get(stat)
        if column is None:
            column = columns[stat] = _column(kept[start : start + depth], values, stat)
        if not raised and _quiet(rule, column):
            continue
        _follow(state, rule, column, times, changes)
    state.history = _packed_history(kept, depth, samples)
    # What stays of the old history is calm if it was; a full batch replaces it.
    state.calm = calm and (state.calm or len(times) >= HISTORY)
    if len(changes) > 1:
        # The SDK evaluates every rule on each sample in turn; keep its order.
        changes.sort(key=lambda c: (c.timestamp, _ORDER[c.rule.name]))
    return changes


def _calm(samples: Columns) -> bool:
    """Whether every value of the batch lies within ``CALM``."""
    for index, nullable, low, high in _CALM_CHECKS:
        values: Any = samples[index]  # (no cast: this runs for every window)
        if nullable and None in values:
            values = [v for v in values if v is not None]
            if not values:
                continue
        if (low is not None and min(values) < low) or (high is not None and max(values) > high):
            return False
    return True


def _column(before: array[float], values: Sequence[Any], stat: Stat) -> list[float]:
    """A measure's values before and in the batch, as floats (as the packed history holds
    them), NULL for a missing value."""
    column = before.tolist()
    if stat in _NULLABLE:
        column += [NULL if v is None else float(v) for v in values]
    else:
        column += map(float, values)
    return column


def _packed_history(kept: array[float], depth: int, samples: Columns) -> bytes:
    """The last ``HISTORY`` values of each measure, packed as ``WarningState.history``."""
    measures: tuple[Any, ...] = samples[_FIRST_STAT : _FIRST_STAT + len(STATS)]
    size = len(samples.ts)
    if size == HISTORY and None not in samples.rtt and None not in samples.mos:
        # The usual window, ten samples all measured: they are the new history as they are.
        return array("d", chain.from_iterable(measures)).tobytes()
    # Otherwise the last HISTORY of the old history and the batch, measure by measure.
    carried = max(0, min(depth, HISTORY - size))
    packed = array("d")
    for i, values in enumerate(measures):
        if i in _NULLABLE_COLUMNS and None in values:
            values = [NULL if v is None else v for v in values]
        if carried:
            end = (i + 1) * depth
            packed.extend(kept[end - carried : end])
        packed.extend(values[-HISTORY:])
    return packed.tobytes()


def _clearly_quiet(rule: WarningRule, before: array[float], values: Sequence[Any]) -> bool:
    """A quicker, weaker ``_quiet``: True only where ``_quiet`` says True, taken on the
    history and the batch without gathering them (False: ask ``_quiet``)."""
    test = rule.test
    if test == "deviation_below" or None in values:
        return False
    threshold = rule.threshold
    # A history NULL (-1) never crosses a threshold from below, and _quiet skips it.
    if test == "above":
        return max(values) <= threshold and (not before or max(before) <= threshold)
    if rule.stat in _NULLABLE:
        return False
    if test == "below":
        return min(values) >= threshold and (not before or min(before) >= threshold)
    # average_above, as _quiet takes it, with a margin far wider than any difference the
    # order of float additions makes.
    total: float = sum(values) + sum(before)
    return total <= threshold * rule.samples * (1 - 1e-9)


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
    # deviation_below: a window with two neighbours at least _JUMPS apart deviates at least
    # ``threshold``; quiet when every run of samples - 1 neighbour pairs holds such a step.
    steps = map(abs, map(sub, values[1:], values))
    return _NO_RUN[rule.samples] not in bytes(map(_JUMPS[rule.name].__le__, steps))


# Neighbours this far apart mean a deviation of at least the rule's threshold: n values
# spanning a range r deviate by at least r / sqrt(2n).
_JUMPS: Final = {
    rule.name: rule.threshold * math.sqrt(2 * rule.samples)
    for rule in WARNING_RULES
    if rule.test == "deviation_below"
}
# A run of samples - 1 neighbour pairs none of which jumps (as _quiet packs them).
_NO_RUN: Final = {rule.samples: bytes(rule.samples - 1) for rule in WARNING_RULES}


def _follow(
    state: WarningState,
    rule: WarningRule,
    column: list[float],
    times: Sequence[float],
    changes: list[WarningChange],
) -> None:
    """Decide ``rule`` sample by sample over the batch (the end of ``column``; ``times`` are
    the batch's sample times)."""
    assert state.origin is not None
    first = len(column) - len(times)
    counting = rule.test == "above" or rule.test == "below"
    if counting:
        # A counting rule's windows differ only in where they end: crossings and NULLs are
        # counted once over the column, and a window's counts are differences of running
        # totals (the same counts _decide takes from the window's values).
        threshold = rule.threshold
        if rule.test == "above":
            crossings = list(accumulate([v > threshold for v in column], initial=0))
        else:
            crossings = list(accumulate([v < threshold for v in column], initial=0))
        nulls = list(accumulate([v == NULL for v in column], initial=0))
    for offset, ts in enumerate(times):
        if ts - state.origin < METRICS_DELAY:
            continue
        end = first + offset + 1
        start = max(0, end - rule.samples)
        if counting:
            if nulls[end] != nulls[start]:
                continue
            decision = _counted(rule, crossings[end] - crossings[start])
        else:
            if NULL in column[start:end]:
                continue
            decision = _decide(rule, column[start:end])
        if decision is None:
            continue
        raised_at = state.active.get(rule.name)
        if decision and raised_at is None:
            state.active[rule.name] = ts
        elif not decision and raised_at is not None and ts - raised_at >= WARNING_TIMEOUT:
            del state.active[rule.name]
        else:
            continue
        changes.append(WarningChange(rule, decision, ts, _metric(rule, column[start:end])))


def _decide(rule: WarningRule, values: list[float]) -> bool | None:
    """True to raise, False to clear, None when the values decide neither."""
    threshold = rule.threshold
    if rule.test == "above":
        return _counted(rule, len([v for v in values if v > threshold]))
    if rule.test == "below":
        return _counted(rule, len([v for v in values if v < threshold]))
    if len(values) < rule.samples:
        return None
    if rule.test == "average_above":
        average = sum(values) / len(values)
        if average > threshold:
            return True
        return False if average <= rule.clear_threshold else None
    return _deviation_below(values, threshold)


def _counted(rule: WarningRule, count: int) -> bool | None:
    """An above/below rule's decision on a window where ``count`` values cross."""
    if count >= rule.raise_count:
        return True
    return False if count <= rule.clear_count else None


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
                _add_stream_tags(tags, thresholds, metrics)
                if metrics.latency is not None and _above(
                    metrics.latency.avg, thresholds.gateway_latency_ms
                ):
                    tags.add("high_latency")
    if sdk is not None:
        _add_stream_tags(tags, thresholds, sdk)
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


def _add_stream_tags(
    tags: set[out.CallTag], thresholds: TagThresholds, metrics: out.Metrics
) -> None:
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


def _delayed(percentiles: Mapping[str, int] | None, limit: float) -> bool:
    """Whether 1 % or more of packets were delayed by ``limit`` ms or more (d99 and up)."""
    if percentiles is None:
        return False
    return any(delay >= limit and int(key[1:]) >= 99 for key, delay in percentiles.items())


def _above(value: float | None, limit: float) -> bool:
    return value is not None and value > limit
