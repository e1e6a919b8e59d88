"""The distributed backend end to end, as separate processes on a real 3-node JetStream
cluster and a real PostgreSQL: one ``worker --role api,ingest,delivery`` and two ``worker
--role engine``. Every call gets exactly one complete summary at a real webhook receiver;
the engine workers share the partitions (lease owners in NATS); a worker killed with
SIGKILL has its partitions taken over by the other, and processing goes on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest
from twilio.rest import Client  # type: ignore[import-untyped]

from callstream.model.catalogue import catalogue
from callstream.server import PARTITIONS
from callstream.store.interfaces import Lease
from callstream.store.nats.leases import NatsPartitionLeases
from tests.integration.backends import SESSION, Distributed
from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server
from tests.integration.test_webhook_delivery import FAST, Receiver
from tests.integration.traffic import post_traffic

COMPLETE = "com.twilio.voice.insights.call-summary.complete"
LEASE_TTL = 2.0


@pytest.fixture(scope="module")
def distributed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distributed]:
    """The session's backend when it runs on nats, else one for this module."""
    if SESSION.distributed is not None:
        yield SESSION.distributed
        return
    running = Distributed(tmp_path_factory.mktemp("distributed")).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)  # polling interval of a condition with a deadline


def lease_owners(env: dict[str, str]) -> dict[int, Lease]:
    """The engine partitions' current leases, as stored in NATS."""

    async def read() -> dict[int, Lease]:
        nc = await nats.connect(servers=env["CALLSTREAM_NATS_URL"].split(","))
        try:
            leases = NatsPartitionLeases(nc, PARTITIONS, replicas=3, owner="test-reader")
            await leases.start()
            return await leases.owners()
        finally:
            await nc.close()

    return asyncio.run(read())


def owner_pid(lease: Lease) -> int:
    # Owner ids are <host>-<pid>-<random> (store/nats/leases.py worker_id).
    return int(lease.owner.rsplit("-", 2)[1])


def test_workers_share_partitions_and_take_over_a_dead_one(
    tmp_path: Path, distributed: Distributed, receiver: Receiver
) -> None:
    data_dir = tmp_path / "data"
    env = {
        **distributed.env(data_dir, replicas=3),
        **FAST,
        "CALLSTREAM_COMPLETE_AFTER": "2s",
        "CALLSTREAM_LEASE_TTL": f"{LEASE_TTL}s",
    }
    front = Server(data_dir, extra_env=env, command=["worker", "--role", "api,ingest,delivery"])
    engines = [
        Server(data_dir, extra_env=env, command=["worker", "--role", "engine"]) for _ in range(2)
    ]
    front.start(timeout=60)
    try:
        for engine in engines:
            engine.start(timeout=60)
        pids = {engine.process.pid for engine in engines if engine.process is not None}

        def shared() -> bool:
            owners = lease_owners(env)
            return len(owners) == PARTITIONS and {owner_pid(o) for o in owners.values()} == pids

        wait_until(shared, 30, "both engine workers to hold a share of all partitions")

        client = Client(ACCOUNT_SID, AUTH_TOKEN)
        client.events.base_url = front.url
        sink = client.events.v1.sinks.create(
            description="all",
            sink_type="webhook",
            sink_configuration={
                "destination": receiver.url("/hook"),
                "method": "POST",
                "batch_events": True,
            },
        )
        types = [t.type for t in catalogue().types if t.type.startswith("com.twilio.voice")]
        client.events.v1.subscriptions.create(
            description="everything", sink_sid=sink.sid, types=[{"type": t} for t in types]
        )

        def complete_ids() -> dict[str, set[str]]:
            found: dict[str, set[str]] = {}
            for request in receiver.snapshot():
                for event in request.events:
                    if event["type"] == COMPLETE:
                        found.setdefault(event["data"]["call_sid"], set()).add(event["id"])
            return found

        first = set(post_traffic(front, ACCOUNT_SID, AUTH_TOKEN, calls=6, seed=31))
        wait_until(lambda: first <= complete_ids().keys(), 90, "complete summaries")

        # Kill one engine worker without a goodbye: its leases must expire and move.
        victim, survivor = engines
        assert victim.process is not None and survivor.process is not None
        victim.stop(signal.SIGKILL)

        def taken_over() -> bool:
            owners = lease_owners(env)
            return len(owners) == PARTITIONS and {owner_pid(o) for o in owners.values()} == {
                survivor.process.pid if survivor.process else -1
            }

        wait_until(taken_over, 30, "the surviving worker to own every partition")

        second = set(post_traffic(front, ACCOUNT_SID, AUTH_TOKEN, calls=6, seed=32))
        assert first.isdisjoint(second)
        wait_until(lambda: second <= complete_ids().keys(), 90, "complete summaries after")

        # Exactly one complete summary per call (one CloudEvent id; redeliveries repeat it).
        summaries = complete_ids()
        assert set(summaries) == first | second
        assert all(len(ids) == 1 for ids in summaries.values()), summaries
        # The Voice Insights API (PostgreSQL, fed by the indexer) has them too.
        with front.client() as http:
            for call_sid in first | second:

                def indexed(sid: str = call_sid) -> bool:
                    response = http.get(f"/v1/Voice/{sid}/Summary")
                    return bool(
                        response.status_code == 200
                        and response.json().get("processing_state") == "complete"
                    )

                wait_until(indexed, 30, f"the indexed summary of {call_sid}")
    finally:
        for server in (*engines, front):
            if server.process is not None:
                server.stop()


@pytest.mark.parametrize(
    ("args", "missing"),
    [
        (["worker", "--role", "engine"], "NATS_URL"),
        (["worker", "--role", "engine", "--nats-url", "nats://127.0.0.1:1"], "DATABASE_URL"),
        (["serve", "--backend", "nats", "--database-url", "postgresql://x/y"], "NATS_URL"),
    ],
)
def test_a_missing_url_is_a_usage_error_that_names_it(
    tmp_path: Path, args: list[str], missing: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSTREAM_")}
    done = subprocess.run(
        [sys.executable, "-m", "callstream", *args],
        env={**env, "CALLSTREAM_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert missing in done.stderr
