"""The call-traffic simulator: realistic, reproducible telemetry for demos, tests and benchmarks.

``Simulation(SimConfig(...))`` yields ``(arrival offset, record)`` pairs in arrival order;
``write_ndjson`` writes them; ``callstream simulate`` (``callstream.sim.cli.simulate``) does
both from the command line. The traffic and late-arrival models are described in
docs/ingest.md.
"""

from callstream.sim.calls import CallPlan, TrafficMix, plan_calls
from callstream.sim.delivery import DEFAULT_DELIVERY, DelayComponent, DeliveryModel, SourceDelivery
from callstream.sim.generator import (
    DEFAULT_START,
    Arrival,
    SimConfig,
    SimStats,
    Simulation,
    generate,
    write_ndjson,
)
from callstream.sim.profiles import PROFILES, QualityProfile

__all__ = [
    "DEFAULT_DELIVERY",
    "DEFAULT_START",
    "PROFILES",
    "Arrival",
    "CallPlan",
    "DelayComponent",
    "DeliveryModel",
    "QualityProfile",
    "SimConfig",
    "SimStats",
    "Simulation",
    "SourceDelivery",
    "TrafficMix",
    "generate",
    "plan_calls",
    "write_ndjson",
]
