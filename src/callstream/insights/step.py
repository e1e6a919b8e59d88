"""What one call's logic hands back to the engine runtime after each step."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from callstream.model.insights import InsightEvent


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The timers of the summary lifecycle, in seconds (DESIGN.md settings)."""

    partial_after: float = 10.0
    complete_after: float = 1800.0


@dataclass
class Step:
    """The result of applying records or a timer to one call.

    ``timers`` maps a timer kind to its new due time (Unix seconds, processing
    time), or to None to cancel it; kinds not named are left as they are.
    """

    events: list[InsightEvent] = field(default_factory=list)
    timers: dict[str, float | None] = field(default_factory=dict)

    def merge(self, other: Step) -> None:
        self.events.extend(other.events)
        self.timers.update(other.timers)
