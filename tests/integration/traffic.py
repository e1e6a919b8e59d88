"""Simulated call traffic posted to a test server, for tests that read what it became."""

from __future__ import annotations

import dataclasses

from callstream.model.telemetry import encode_batch
from callstream.sim import DEFAULT_DELIVERY, SimConfig, Simulation
from tests.integration.server import Server

# Every delivery arrives: a lost "completed" would leave its call to the 60 s idle timer, and
# the tests would wait on that instead of on the summary timers they set.
NO_LOSS = dataclasses.replace(
    DEFAULT_DELIVERY,
    **{
        source: dataclasses.replace(getattr(DEFAULT_DELIVERY, source), drop=0.0)
        for source in ("gateway_event", "gateway_metric", "sdk_event", "sdk_sample")
    },
)

BATCH = 2000


def post_traffic(server: Server, username: str, password: str, calls: int, seed: int) -> list[str]:
    """Posts a simulation's telemetry as ``username``; returns its call SIDs in creation order."""
    simulation = Simulation(SimConfig(calls=calls, seed=seed, delivery=NO_LOSS))
    records = [record for _, record in simulation]
    with server.client(username, password) as client:
        for start in range(0, len(records), BATCH):
            response = client.post(
                "/v1/Telemetry",
                content=encode_batch(records[start : start + BATCH]),
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 202, response.text
    return [plan.call_sid for plan in simulation.plans()]
