"""What every record builder of one call shares: the call, its clock and its record ids."""

from __future__ import annotations

from datetime import datetime, timedelta
from random import Random

from callstream.sim.calls import CallPlan, TrafficMix
from callstream.sim.parties import CallParties, draw_parties
from callstream.sim.profiles import PROFILES, QualityProfile

__all__ = ["CallContext"]


class CallContext:
    """One call being generated: its plan, parties, profile, random stream and id counter."""

    __slots__ = ("_epoch", "_next_id", "mix", "parties", "plan", "profile", "rng", "sid")

    def __init__(self, plan: CallPlan, epoch: datetime, mix: TrafficMix) -> None:
        self.plan = plan
        self.sid = plan.call_sid
        self.mix = mix
        self.profile: QualityProfile = PROFILES[plan.profile]
        self.rng = Random(plan.seed)
        self.parties: CallParties = draw_parties(plan, self.rng)
        self._epoch = epoch
        self._next_id = 0

    def at(self, t: float) -> datetime:
        """The wall-clock time of simulation second ``t``, to the millisecond."""
        return self._epoch + timedelta(milliseconds=round(t * 1000))

    def new_id(self) -> str:
        """A record id unique across the simulation: the call SID and a per-call counter."""
        self._next_id += 1
        return f"{self.sid}-{self._next_id}"
