"""Kill -9 at random moments under load: nothing lost, nothing produced differently.

The same simulated traffic goes to two servers. One runs undisturbed; the other is
SIGKILLed at random moments while telemetry is being posted and processed, and
once more while summary timers are pending, staying down until they are overdue.
The crashed server must end up with the same call events and metrics (same ids,
same content), exactly one complete summary per call with the same content, and
its overdue timers must fire when it comes back.

Delivery in this test is lossless and prompt (records still arrive out of order)
so that every call's telemetry is in before its complete timer, which makes the
complete summaries a fair comparison between the two runs.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from callstream.model.telemetry import encode_batch
from callstream.sim import DelayComponent, DeliveryModel, SimConfig, Simulation, SourceDelivery
from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server

PROMPT = SourceDelivery(drop=0.0, components=(DelayComponent(1.0, 1.0, 0.6),))
LOSSLESS = DeliveryModel(
    gateway_event=PROMPT, gateway_metric=PROMPT, sdk_event=PROMPT, sdk_sample=PROMPT
)
TIMERS = {"CALLSTREAM_PARTIAL_AFTER": "1s", "CALLSTREAM_COMPLETE_AFTER": "8s"}
CALLS = 40
BATCH = 100


def traffic() -> list[bytes]:
    simulation = Simulation(SimConfig(calls=CALLS, concurrency=12, seed=7, delivery=LOSSLESS))
    records = [record for _, record in simulation]
    return [encode_batch(records[i : i + BATCH]) for i in range(0, len(records), BATCH)]


def post_all(server: Server, bodies: list[bytes], lock: threading.Lock) -> None:
    """Post every batch, retrying across crashes as a real sender would."""
    for body in bodies:
        deadline = time.monotonic() + 60
        while True:
            try:
                with lock:
                    url = server.url
                response = httpx.post(
                    f"{url}/v1/Telemetry",
                    content=body,
                    auth=(ACCOUNT_SID, AUTH_TOKEN),
                    headers={"content-type": "application/json"},
                    timeout=10,
                )
                if response.status_code == 202:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come back"
            time.sleep(0.05)  # retry interval while the server restarts


def all_events(server: Server) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    with server.client() as client:
        while True:
            page = client.get("/callstream/v1/Events", params={"After": after, "Limit": 1000})
            page.raise_for_status()
            body = page.json()
            events.extend(body["events"])
            if body["next_after"] == after:
                return events
            after = body["next_after"]


def wait_for_completes(server: Server, timeout: float = 90) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        events = all_events(server)
        completes = {e["data"]["call_sid"] for e in events if e["type"].endswith(".complete")}
        if len(completes) >= CALLS or time.monotonic() > deadline:
            return events
        time.sleep(0.2)  # polling interval while waiting on a condition with a deadline


def by_kind(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        kinds.setdefault(event["type"].removeprefix("com.twilio.voice.insights."), []).append(event)
    return kinds


def summary_content(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event["data"].items() if k != "processing_version"}


@pytest.mark.slow
def test_kill_9_under_load_loses_nothing_and_changes_nothing(tmp_path: Path) -> None:
    bodies = traffic()
    reference = Server(tmp_path / "reference", extra_env=TIMERS).start()
    try:
        post_all(reference, bodies, threading.Lock())
        expected = wait_for_completes(reference)
    finally:
        reference.stop()

    crashing = Server(tmp_path / "crashing", extra_env=TIMERS).start()
    lock = threading.Lock()
    rng = random.Random(20261122)
    kills = 0
    poster = threading.Thread(target=post_all, args=(crashing, bodies, lock), daemon=True)
    try:
        poster.start()
        while poster.is_alive() and kills < 4:
            time.sleep(rng.uniform(0.2, 1.2))  # a random moment to crash at, not a wait
            with lock:
                crashing.stop(signal.SIGKILL)
                crashing.start()
            kills += 1
        poster.join(120)
        assert not poster.is_alive()
        # Crash again with partial and complete timers pending, and stay down until
        # they are overdue: they must fire when the server comes back.
        time.sleep(0.5)  # let the engine pick up the last batches first: a crash moment
        crashing.stop(signal.SIGKILL)
        time.sleep(9)  # the downtime itself is what is tested
        crashing.start()
        actual = wait_for_completes(crashing)
    finally:
        crashing.stop()
    assert kills >= 2

    # Duplicates may only ever repeat an event exactly.
    seen: dict[str, dict[str, Any]] = {}
    for event in actual:
        assert seen.setdefault(event["id"], event) == event
    got, want = by_kind(list(seen.values())), by_kind(expected)

    for kind in ("call-event.gateway", "call-event.sdk", "call-metrics.gateway"):
        assert {e["id"]: e["data"] for e in got[kind]} == {e["id"]: e["data"] for e in want[kind]}
    assert {e["id"] for e in got["call-metrics.sdk"]} == {e["id"] for e in want["call-metrics.sdk"]}

    completes = Counter(e["data"]["call_sid"] for e in got["call-summary.complete"])
    assert len(completes) == CALLS and set(completes.values()) == {1}
    assert {e["data"]["call_sid"]: summary_content(e) for e in got["call-summary.complete"]} == {
        e["data"]["call_sid"]: summary_content(e) for e in want["call-summary.complete"]
    }
    for kind in ("call-summary.partial", "call-summary.predicted-complete"):
        assert {e["data"]["call_sid"] for e in got.get(kind, [])} <= set(completes)
