"""A sink's send-rate cap while it is in trouble, as Twilio throttles (event-streams-api.md §2.3).

On a failed request that may succeed later (429, 5xx, timeout, connection failure) the sink
is capped at ``rate`` events/s; each further such failure cuts the current cap to
``factor`` (99 %) of itself, down to ``floor``. After ``recovery`` (5 min) without such a
failure the cap ramps back up, doubling every second, and is lifted once it passes
``lift_at`` (ten times ``rate``), where it no longer limits anything a throttled sink sees.

The stored state is the cap set at the last failure and that failure's time; the cap now is
a pure function of them and the clock, so the delivery worker and the status API agree
without the worker writing anything while the cap ramps back.
"""

from __future__ import annotations

import dataclasses
import time


@dataclasses.dataclass(frozen=True)
class ThrottlePolicy:
    rate: float = 100.0
    """Events/s a sink is capped at on its first failure."""
    factor: float = 0.99
    """Each further failure multiplies the cap by this."""
    floor: float = 1.0
    """The cap never goes below this (a failing sink keeps being tried)."""
    recovery: float = 300.0
    """Seconds without failures before the cap ramps back up."""

    @property
    def lift_at(self) -> float:
        return self.rate * 10

    def current(self, capped_at: float | None, since: float | None, now: float) -> float | None:
        """The cap now (events/s), None when the sink is not throttled."""
        if capped_at is None or since is None:
            return None
        quiet = now - since - self.recovery
        if quiet <= 0:
            return capped_at
        if quiet >= 64:  # 2**64 times any cap is past lift_at
            return None
        ramped = capped_at * 2.0**quiet
        return None if ramped >= self.lift_at else ramped

    def after_failure(self, capped_at: float | None, since: float | None, now: float) -> float:
        """The cap to set on a failure at ``now``."""
        current = self.current(capped_at, since, now)
        if current is None:
            return self.rate
        return max(self.floor, min(current, self.rate) * self.factor)


class TokenBucket:
    """Spends events against a cap that may change; holds at most one second's worth."""

    def __init__(self) -> None:
        self._tokens = 0.0
        self._at = time.monotonic()
        self._rate: float | None = None

    def available(self, rate: float | None) -> float:
        """Events that may be sent now under ``rate`` (infinite when None)."""
        now = time.monotonic()
        if rate is None:
            self._rate = None
            return float("inf")
        if self._rate is None:
            # Newly throttled: start with one event, not a full second's burst.
            self._tokens = 1.0
        else:
            self._tokens = min(max(rate, 1.0), self._tokens + (now - self._at) * rate)
        self._rate = rate
        self._at = now
        return self._tokens

    def spend(self, events: int) -> None:
        if self._rate is not None:
            self._tokens -= events

    def wait_for(self, events: float) -> float:
        """Seconds until ``events`` tokens are available at the current rate."""
        if self._rate is None or self._tokens >= events:
            return 0.0
        return (events - self._tokens) / self._rate
