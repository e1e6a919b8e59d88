"""Kinesis delivery end to end: a real server writing through STS AssumeRole to a stream on
a moto server (over HTTP, found through the AWS SDK's own ``AWS_ENDPOINT_URL``), the sink
tested, validated and subscribed with twilio-python, simulated telemetry, and every record
read back with boto3 and parsed with the CloudEvents SDK."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.formats.json import JSONFormat

from tests.integration.moto_server import ACCOUNT, MotoServer, Record, read_stream
from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server
from tests.integration.streams import (
    GATEWAY_EVENT,
    GATEWAY_METRICS,
    PARTIAL_SUMMARY,
    SDK_EVENT,
    TEST_EVENT,
    live_events,
    twilio,
    wait_for,
)
from tests.integration.traffic import post_traffic

TYPES = {GATEWAY_EVENT, GATEWAY_METRICS, SDK_EVENT, PARTIAL_SUMMARY}


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path).start()
    yield server
    server.stop()


def parsed(record: Record) -> dict[str, Any]:
    """The record as the CloudEvents SDK reads it (raises if it is not a CloudEvent)."""
    event = JSONFormat().read(None, record.data)
    assert event.get_specversion() == "1.0"
    body: dict[str, Any] = json.loads(record.data)
    assert event.get_id() == body["id"] and event.get_type() == body["type"]
    return body


def test_events_reach_the_stream_keyed_by_call(tmp_path: Path, moto: MotoServer) -> None:
    arn = moto.create_stream(shards=2)
    server = Server(
        tmp_path / "data",
        extra_env={
            **moto.aws_env(),
            "CALLSTREAM_PARTIAL_AFTER": "1s",
            "CALLSTREAM_COMPLETE_AFTER": "1h",
            "CALLSTREAM_DELIVERY_RETRY_BASE": "0.1s",
            "CALLSTREAM_DELIVERY_RETRY_CAP": "0.5s",
            # One request at a time: the order in which a call's events reach its shard is
            # then the order callstream produced them, which this test checks; and moto
            # loses records when PutRecords calls to one shard overlap (it numbers them
            # without a lock), which AWS does not.
            "CALLSTREAM_DELIVERY_CONCURRENCY": "1",
        },
    ).start()
    try:
        client = twilio(server)
        sink = client.events.v1.sinks.create(
            description="kinesis",
            sink_type="kinesis",
            sink_configuration={
                "arn": arn,
                "role_arn": f"arn:aws:iam::{ACCOUNT}:role/callstream-events-write",
                "external_id": secrets.token_hex(40),
            },
        )
        assert sink.status == "initialized"

        # The Sink Test event reaches the stream; its test_id validates the sink.
        client.events.v1.sinks(sink.sid).sink_test.create()

        def test_records() -> list[Record]:
            return [r for r in read_stream(moto, arn) if json.loads(r.data)["type"] == TEST_EVENT]

        wait_for(lambda: bool(test_records()), 30, "the test event in the stream")
        (test_record,) = test_records()
        test_event = parsed(test_record)
        assert test_record.key == test_event["id"]  # no call: keyed by the event id
        data = test_event["data"]
        data = data if isinstance(data, dict) else json.loads(data)
        validated = client.events.v1.sinks(sink.sid).sink_validate.create(test_id=data["test_id"])
        assert validated.result == "valid"
        assert client.events.v1.sinks(sink.sid).fetch().status == "active"

        client.events.v1.subscriptions.create(
            description="kinesis", sink_sid=sink.sid, types=[{"type": t} for t in sorted(TYPES)]
        )
        calls = post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=3, seed=21)

        def summarised() -> bool:
            summaries = {e["data"]["call_sid"] for e in live_events(server, {PARTIAL_SUMMARY})}
            return summaries >= set(calls)

        wait_for(summarised, 60, "a partial summary of every call")

        def all_in_stream() -> bool:
            expected = {e["id"] for e in live_events(server, TYPES)}
            stored = {json.loads(r.data)["id"] for r in read_stream(moto, arn)}
            return expected <= stored

        wait_for(all_in_stream, 60, "every subscribed event in the stream")

        records = [r for r in read_stream(moto, arn) if r != test_record]
        produced = live_events(server, TYPES)
        stored_ids = [json.loads(r.data)["id"] for r in records]
        assert len(stored_ids) == len(set(stored_ids))  # no failures here, so no redeliveries
        assert set(stored_ids) <= {e["id"] for e in produced}
        by_id = {e["id"]: e for e in produced}
        shards_of_call: dict[str, set[str]] = {}
        for record in records:
            event = parsed(record)
            assert event == by_id[event["id"]]  # the same CloudEvent a webhook would get
            assert record.key == event["data"]["call_sid"]
            shards_of_call.setdefault(record.key, set()).add(record.shard)
        assert set(shards_of_call) == set(calls)
        assert all(len(shards) == 1 for shards in shards_of_call.values())
        for call_sid in calls:
            in_stream = [
                json.loads(r.data)["id"]
                for r in sorted(records, key=lambda r: r.sequence)
                if r.key == call_sid
            ]
            in_production = [e["id"] for e in produced if e["data"]["call_sid"] == call_sid]
            assert in_stream == in_production
            assert {by_id[i]["type"] for i in in_stream} >= {GATEWAY_EVENT, PARTIAL_SUMMARY}
    finally:
        server.stop()
