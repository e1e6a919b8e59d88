"""Aggregates that give the same result whatever order their inputs arrive in.

A call's complete summary must not depend on the order its telemetry arrived in
(docs/decisions/0003-call-lifecycle.md), so per-call state keeps only commutative
aggregates: counts, exact sums, minima and maxima, and "latest" registers that pick a
value by its record's timestamp rather than by when it arrived.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, TypeVar

import msgspec

from callstream.model.insights import MetricStats

__all__ = ["SCALE", "Acc", "Stamped", "Summed", "newer", "rounded", "scaled", "summed"]

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


def rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


Summed = tuple[int, int, int, int]
"""count, sum, minimum and maximum of a batch of values, in millionths."""

_SCALE_BY: Final = float(SCALE).__mul__


def summed(values: Iterable[float]) -> Summed | None:
    """A batch of values summed exactly (in millionths); None when there are none."""
    ints = list(map(int, map(_SCALE_BY, values)))
    if not ints:
        return None
    return len(ints), sum(ints), min(ints), max(ints)


def scaled(value: float) -> int:
    """``value`` in millionths, truncated as ``summed`` does: any fixed rule is exact."""
    return int(_SCALE_BY(value))


class Acc(msgspec.Struct, array_like=True, gc=False):
    """Count, exact sum, minimum and maximum of one measure, all in millionths."""

    n: int = 0
    total: int = 0
    lo: int | None = None
    hi: int | None = None

    def add(self, value: float) -> None:
        as_int = scaled(value)
        self.n += 1
        self.total += as_int
        if self.lo is None or as_int < self.lo:
            self.lo = as_int
        if self.hi is None or as_int > self.hi:
            self.hi = as_int

    def merge(self, batch: Summed | None) -> None:
        if batch is None:
            return
        count, total, lo, hi = batch
        self.n += count
        self.total += total
        if self.lo is None or lo < self.lo:
            self.lo = lo
        if self.hi is None or hi > self.hi:
            self.hi = hi

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
        if self.n == 0 and self.hi is None:
            return None
        return MetricStats(
            min=_unscaled(self.lo, digits) if with_min else None,
            max=_unscaled(self.hi, digits),
            avg=rounded(self.avg, digits),
        )


def _unscaled(value: int | None, digits: int) -> float | None:
    return None if value is None else round(value / SCALE, digits)
