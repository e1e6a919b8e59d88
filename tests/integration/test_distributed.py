"""The distributed backend end to end, as separate processes on a real 3-node JetStream
cluster and a real PostgreSQL: ``worker --role ...`` processes for the API and ingest,
engine and delivery. Every call gets exactly one complete summary at a real webhook
receiver; the engine workers share the partitions (lease owners in NATS); a worker killed
with SIGKILL has its partitions taken over by the other, and processing goes on; so does
it when a delivery worker or a NATS node dies; and partitions move between engine
workers as they join and leave without ever having two owners.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from callstream.server import PARTITIONS
from tests.integration.backends import SESSION, Distributed
from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server
from tests.integration.test_webhook_delivery import FAST, Receiver
from tests.integration.traffic import post_traffic
from tests.integration.workers import (
    LeaseWatch,
    complete_ids,
    conflicting_duplicates,
    lease_owners,
    logged_events,
    owner_pid,
    pid_of,
    post_traffic_retrying,
    received,
    start_all,
    stop_all,
    subscribe_everything,
    wait_until,
)

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

        subscribe_everything(front, receiver)

        first = set(post_traffic(front, ACCOUNT_SID, AUTH_TOKEN, calls=6, seed=31))
        wait_until(lambda: first <= complete_ids(receiver).keys(), 90, "complete summaries")

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
        wait_until(lambda: second <= complete_ids(receiver).keys(), 90, "complete summaries after")

        # Exactly one complete summary per call (one CloudEvent id; redeliveries repeat it).
        summaries = complete_ids(receiver)
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
        stop_all([*engines, front])


def worker_env(distributed: Distributed, data_dir: Path) -> dict[str, str]:
    """R3 streams (a node kill is survivable), short summary timers and short leases."""
    return {
        **distributed.env(data_dir, replicas=3),
        **FAST,
        "CALLSTREAM_PARTIAL_AFTER": "1s",
        "CALLSTREAM_COMPLETE_AFTER": "5s",
        "CALLSTREAM_LEASE_TTL": f"{LEASE_TTL}s",
    }


def assert_every_event_arrived_once(
    env: dict[str, str], receiver: Receiver, calls: set[str]
) -> None:
    """Every call has one complete summary; every event the engine stored reached the sink
    (one CloudEvent id per stored event, so none lost and no duplicate under a new id);
    a CloudEvent id that arrived twice carried the same data both times."""
    summaries = complete_ids(receiver)
    assert set(summaries) == calls
    assert all(len(ids) == 1 for ids in summaries.values()), summaries
    stored = {key: len(ids) for key, ids in logged_events(env).items() if key[0] in calls}
    arrived: dict[tuple[str, str], set[str]] = {}
    for event in received(receiver):
        arrived.setdefault((event["data"]["call_sid"], event["type"]), set()).add(event["id"])
    assert {key: len(ids) for key, ids in arrived.items()} == stored
    assert conflicting_duplicates(receiver) == {}


def test_no_event_is_lost_when_an_engine_a_delivery_worker_and_a_nats_node_die(
    tmp_path: Path, distributed: Distributed, receiver: Receiver
) -> None:
    assert distributed.cluster is not None
    data_dir = tmp_path / "data"
    env = worker_env(distributed, data_dir)

    def worker(role: str) -> Server:
        return Server(data_dir, extra_env=env, command=["worker", "--role", role])

    front = worker("api,ingest")
    engines = [worker("engine"), worker("engine")]
    deliveries = [worker("delivery"), worker("delivery")]
    front.start(timeout=60)
    killed_node: int | None = None
    try:
        start_all([*engines, *deliveries])
        subscribe_everything(front, receiver)
        calls: set[str] = set()

        def post_wave(seed: int) -> set[str]:
            wave = set(post_traffic_retrying(front, calls=3, seed=seed))
            assert calls.isdisjoint(wave)
            calls.update(wave)
            return wave

        def some_arrived(wave: set[str]) -> bool:
            return any(e["data"]["call_sid"] in wave for e in received(receiver))

        # Each failure strikes while the previous wave is still being turned into events
        # and delivered: the pipeline is busy, not idle.
        wave = post_wave(41)
        wait_until(lambda: some_arrived(wave), 60, "events of the first wave")
        engines[0].stop(signal.SIGKILL)
        wave = post_wave(42)
        wait_until(lambda: some_arrived(wave), 60, "events of the second wave")
        deliveries[0].stop(signal.SIGKILL)
        wave = post_wave(43)
        wait_until(lambda: some_arrived(wave), 60, "events of the third wave")
        killed_node = 2
        distributed.cluster.kill(killed_node)
        post_wave(44)

        wait_until(
            lambda: calls <= complete_ids(receiver).keys(), 90, "every call's complete summary"
        )

        # What the engine stored must all be delivered: wait until as many distinct ids
        # arrived as it stored events, then compare them one by one.
        def caught_up() -> bool:
            ids = {event["id"] for event in received(receiver)}
            return len(ids) >= sum(len(found) for found in logged_events(env).values())

        wait_until(caught_up, 60, "every stored event at the sink", every=0.5)
        assert_every_event_arrived_once(env, receiver, calls)
        assert lease_owners(env).keys() == set(range(PARTITIONS))
        assert {owner_pid(o) for o in lease_owners(env).values()} == {pid_of(engines[1])}
    finally:
        stop_all([*engines, *deliveries, front])
        if killed_node is not None:
            # The cluster is shared by the session: bring the node back before others run.
            distributed.cluster.restart(killed_node)


def test_partitions_move_between_engine_workers_without_two_owners(
    tmp_path: Path, distributed: Distributed, receiver: Receiver
) -> None:
    data_dir = tmp_path / "data"
    env = worker_env(distributed, data_dir)
    front = Server(data_dir, extra_env=env, command=["worker", "--role", "api,ingest,delivery"])
    first = Server(data_dir, extra_env=env, command=["worker", "--role", "engine"])
    second = Server(data_dir, extra_env=env, command=["worker", "--role", "engine"])
    watch = LeaseWatch(env).start()
    try:
        start_all([front, first])

        def owned_by(*servers: Server) -> bool:
            owners = lease_owners(env)
            pids = {owner_pid(o) for o in owners.values()}
            return len(owners) == PARTITIONS and pids == {pid_of(s) for s in servers}

        wait_until(lambda: owned_by(first), 30, "the first engine worker to own every partition")
        subscribe_everything(front, receiver)
        calls = set(post_traffic(front, ACCOUNT_SID, AUTH_TOKEN, calls=4, seed=51))

        second.start(timeout=60)
        wait_until(lambda: owned_by(first, second), 30, "the two workers to share partitions")
        calls |= set(post_traffic(front, ACCOUNT_SID, AUTH_TOKEN, calls=4, seed=52))

        assert first.stop() == 0  # a clean stop hands its leases back
        wait_until(lambda: owned_by(second), 30, "the second worker to own every partition")
        calls |= set(post_traffic(front, ACCOUNT_SID, AUTH_TOKEN, calls=4, seed=53))

        wait_until(
            lambda: calls <= complete_ids(receiver).keys(), 90, "every call's complete summary"
        )
        watch.stop()
        assert watch.overlaps(LEASE_TTL) == []
        handed = {
            w.partition for w in watch.writes if w.owner and owner_pid(w.owner) == pid_of(second)
        }
        assert handed == set(range(PARTITIONS))
        # A clean handover (release, then take) is quick; a TTL plus scheduling at most.
        assert watch.longest_unowned(LEASE_TTL) < LEASE_TTL + 3.0
        summaries = complete_ids(receiver)
        assert all(len(ids) == 1 for ids in summaries.values()), summaries
        assert conflicting_duplicates(receiver) == {}
    finally:
        watch.stop()
        stop_all([second, first, front])


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
