"""Aggregates that give the same result whatever order their inputs arrive in.

A call's complete summary must not depend on the order its telemetry arrived in
(docs/decisions/0003-call-lifecycle.md), so per-call state keeps only commutative
aggregates: counts, exact sums, minima and maxima, and "latest" registers that pick a
value by its record's timestamp rather than by when it arrived.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, TypeVar

import msgspec

from callstream.model.insights import MetricStats

__all__ = [
    "SCALE",
    "Acc",
    "Stamped",
    "Summed",
    "newer",
    "newer_encoded",
    "scaled",
    "summed",
    "unscaled",
]

SCALE: Final = 1_000_000
"""Sums are kept in millionths as integers: float addition depends on its order, integer
addition does not, and a millionth of a millisecond is far below any measure's precision."""

T = TypeVar("T")

Stamped = tuple[float, T]
"""A value with the timestamp (Unix seconds) of the record that reported it."""

_tiebreak_encoder: Final = msgspec.msgpack.Encoder()


def newer(current: Stamped[Any] | None, timestamp: float, value: object) -> bool:
    """Whether ``value``, reported at ``timestamp``, replaces ``current``.

    The later report wins. Two reports with the same timestamp are ordered by their encoded
    value, an arbitrary but fixed rule, so that neither arrival order nor record ids decide.
    """
    if current is None:
        return True
    if timestamp != current[0]:
        return timestamp > current[0]
    return _tiebreak_encoder.encode(value) > _tiebreak_encoder.encode(current[1])


def newer_encoded(current: Stamped[bytes] | None, timestamp: float, encoded: bytes) -> bool:
    """``newer`` for a value kept as its msgpack encoding (``encoded``): the same order."""
    if current is None:
        return True
    if timestamp != current[0]:
        return timestamp > current[0]
    return encoded > current[1]


Summed = tuple[int, int, int, int]
"""count, sum, minimum and maximum of a batch of values, in millionths."""

_SCALE_BY: Final = float(SCALE).__mul__
_FLOAT_SCALE: Final = float(SCALE)


def summed(values: Sequence[float]) -> Summed:
    """A batch of values (at least one) summed exactly, in millionths."""
    scale = _FLOAT_SCALE
    # Scaling and truncating keep the order of values, so the extremes are taken before
    # them, from one sort (cheaper than min() and max() for a window's ten values).
    ordered = sorted(values)
    return (
        len(values),
        sum([int(value * scale) for value in values]),
        int(ordered[0] * scale),
        int(ordered[-1] * scale),
    )


def scaled(value: float) -> int:
    """``value`` in millionths, truncated as ``summed`` does: any fixed rule is exact."""
    return int(_SCALE_BY(value))


class Acc(msgspec.Struct, array_like=True, gc=False):
    """Count, exact sum, minimum and maximum of one measure, all in millionths."""

    n: int = 0
    total: int = 0
    lo: int | None = None
    hi: int | None = None

    def add(self, value: float, maximum: float | None = None) -> None:
        """Add one value; ``maximum`` (a reported interval maximum) widens the maximum too."""
        # scaled(), inlined: this runs for every metric record.
        as_int = int(value * _FLOAT_SCALE)
        self.n += 1
        self.total += as_int
        lo = self.lo
        if lo is None or as_int < lo:
            self.lo = as_int
        if maximum is not None:
            top = int(maximum * _FLOAT_SCALE)
            if top > as_int:
                as_int = top
        hi = self.hi
        if hi is None or as_int > hi:
            self.hi = as_int

    def add_all(self, values: Sequence[float]) -> Summed | None:
        """Add a batch of values; return the batch's own ``summed``, None when empty."""
        if not values:
            return None
        batch = count, total, lo, hi = summed(values)
        self.n += count
        self.total += total
        if self.lo is None or lo < self.lo:
            self.lo = lo
        if self.hi is None or hi > self.hi:
            self.hi = hi
        return batch

    def add_window(self, values: Sequence[float]) -> MetricStats | None:
        """Add a metric window's values; return their own min/max/avg (``value`` = avg)
        rounded to 2 digits, None when there are none."""
        batch = self.add_all(values)
        if batch is None:
            return None
        count, total, lo, hi = batch
        avg = round(total / count / SCALE, 2)
        return MetricStats(min=unscaled(lo, 2), max=unscaled(hi, 2), avg=avg, value=avg)

    def add_max(self, value: float) -> None:
        """Widen the maximum only (a reported interval maximum, not a sample)."""
        as_int = scaled(value)
        if self.hi is None or as_int > self.hi:
            self.hi = as_int

    @property
    def avg(self) -> float | None:
        return self.total / self.n / SCALE if self.n else None

    def stats(self, digits: int, *, with_min: bool = True) -> MetricStats | None:
        """min/avg/max rounded to ``digits``; None when nothing was measured."""
        n, lo, hi = self.n, self.lo, self.hi
        if n == 0 and hi is None:
            return None
        return MetricStats(
            min=None if lo is None or not with_min else unscaled(lo, digits),
            max=None if hi is None else unscaled(hi, digits),
            avg=round(self.total / n / SCALE, digits) if n else None,
        )


# Millionths in one unit of the last kept digit, and the matching power of ten, by digits.
_STEPS: Final[tuple[int, ...]] = tuple(10 ** (6 - digits) for digits in range(7))
_POWERS: Final[tuple[int, ...]] = tuple(10**digits for digits in range(7))


def unscaled(value: int, digits: int) -> float:
    """``round(value / SCALE, digits)`` for ``value`` in millionths, 0 <= digits <= 6.

    The same result, worked out in integers: ``round`` to a number of digits is slow, and
    this runs for every metric record. Unless ``value`` lies exactly halfway between two
    multiples of the last digit (then ``round`` is asked, as the float ``value / SCALE``
    decides that tie), the nearest multiple is at least a millionth nearer than the other,
    far beyond any float error, and ``multiple / 10**digits`` is the double nearest that
    decimal, which is what ``round`` returns. Negative values (no measure is) go to ``round``
    too, for its signed zero.
    """
    step = _STEPS[digits]
    quotient, rest = divmod(value, step)
    if value < 0 or 2 * rest == step:
        return round(value / SCALE, digits)
    return (quotient + (2 * rest > step)) / _POWERS[digits]
