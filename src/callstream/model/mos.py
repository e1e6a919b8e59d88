"""Mean opinion score from a one-second network sample, as twilio-voice.js computes it.

Kept bit-for-bit with the SDK's current formula (rtc/mos.ts, 2021) so that scores we compute
for SDK samples match the ones the SDK itself reports; see reference §7.
"""

from __future__ import annotations

import math

__all__ = ["R0", "calculate_mos", "round_mos"]

R0 = 94.768
"""The SDK's base R-factor (no impairment)."""


def calculate_mos(
    rtt: float | None, jitter: float | None, fraction_lost: float | None
) -> float | None:
    """MOS (1.0 .. ~4.43) from round-trip time (ms), jitter (ms) and packet loss (percent, 0-100).

    Returns None when any input is missing, negative or not finite, which is how the SDK reports
    the first sample of a call (it has no previous sample to take a loss fraction from).
    """
    if rtt is None or jitter is None or fraction_lost is None:
        return None
    # One finiteness test covers all three: a NaN or infinity makes the sum non-finite.
    if not (
        rtt >= 0
        and jitter >= 0
        and fraction_lost >= 0
        and math.isfinite(rtt + jitter + fraction_lost)
    ):
        return None
    effective_latency = rtt + jitter * 2 + 10
    r_factor = 0.0
    if effective_latency < 160:
        r_factor = R0 - effective_latency / 40
    elif effective_latency < 1000:
        r_factor = R0 - (effective_latency - 120) / 10
    # Above R/2.5 percent loss the SDK sets R to 0 (MOS 1.0) instead of degrading further.
    if fraction_lost > r_factor / 2.5:
        return 1.0
    r_factor = max(r_factor - fraction_lost * 2.5, 6.52)
    return 1 + 0.035 * r_factor + 0.000007 * r_factor * (r_factor - 60) * (100 - r_factor)


def round_mos(mos: float | None) -> float | None:
    """Round to the two decimals the SDK publishes (Math.round(mos * 100) / 100)."""
    if mos is None:
        return None
    # Math.round rounds halves up, Python's round() rounds them to even.
    return math.floor(mos * 100 + 0.5) / 100
