"""Segment delivery end to end: a real server sending to a local stand-in of Segment's batch
API (``CALLSTREAM_SEGMENT_BASE_URL``), the sink made with twilio-python, simulated traffic."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.segment_receiver import BatchRequest, SegmentReceiver
from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server
from tests.integration.streams import (
    GATEWAY_EVENT,
    PARTIAL_SUMMARY,
    TEST_EVENT,
    live_events,
    twilio,
    wait_for,
)
from tests.integration.traffic import post_traffic

WRITE_KEY = "segment-write-key-0123"
TYPES = {GATEWAY_EVENT, PARTIAL_SUMMARY}


@pytest.fixture
def receiver() -> Iterator[SegmentReceiver]:
    running = SegmentReceiver(WRITE_KEY).start()
    yield running
    running.stop()


def _server(tmp_path: Path, receiver: SegmentReceiver) -> Server:
    return Server(
        tmp_path / "data",
        extra_env={
            "CALLSTREAM_SEGMENT_BASE_URL": receiver.url,
            "CALLSTREAM_PARTIAL_AFTER": "1s",
            "CALLSTREAM_COMPLETE_AFTER": "1h",
            "CALLSTREAM_DELIVERY_RETRY_BASE": "0.1s",
            "CALLSTREAM_DELIVERY_RETRY_CAP": "0.5s",
        },
    ).start()


def _subscribe(server: Server) -> str:
    client = twilio(server)
    sink = client.events.v1.sinks.create(
        description="segment", sink_type="segment", sink_configuration={"write_key": WRITE_KEY}
    )
    assert sink.status == "active"
    client.events.v1.subscriptions.create(
        description="segment", sink_sid=sink.sid, types=[{"type": t} for t in sorted(TYPES)]
    )
    return str(sink.sid)


def test_events_arrive_as_track_calls(tmp_path: Path, receiver: SegmentReceiver) -> None:
    server = _server(tmp_path, receiver)
    try:
        sink_sid = _subscribe(server)
        calls = post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=2, seed=31)
        wait_for(
            lambda: (
                {e["data"]["call_sid"] for e in live_events(server, {PARTIAL_SUMMARY})}
                >= set(calls)
            ),
            60,
            "a partial summary of every call",
        )
        wait_for(
            lambda: (
                {e["id"] for e in live_events(server, TYPES)}
                <= {m["messageId"] for m in receiver.accepted_messages()}
            ),
            60,
            "every event at Segment",
        )
        assert all(r.status == 200 for r in receiver.snapshot())  # the write key was right
        assert all(r.content_type.startswith("application/json") for r in receiver.snapshot())
        produced = {e["id"]: e for e in live_events(server, TYPES)}
        for message in receiver.accepted_messages():
            event = produced[message["messageId"]]
            assert message == {
                "type": "track",
                "event": event["type"],
                "properties": event["data"],
                "anonymousId": event["data"]["call_sid"],
                "messageId": event["id"],
                "timestamp": event["time"],
            }

        # The Sink Test event: no call, so the event id stands in for the user.
        twilio(server).events.v1.sinks(sink_sid).sink_test.create()
        wait_for(
            lambda: any(m["event"] == TEST_EVENT for m in receiver.accepted_messages()),
            20,
            "the test event at Segment",
        )
        test = next(m for m in receiver.accepted_messages() if m["event"] == TEST_EVENT)
        assert test["anonymousId"] == test["messageId"]
        assert "test_id" in test["properties"]
    finally:
        server.stop()


def test_a_500_is_retried(tmp_path: Path, receiver: SegmentReceiver) -> None:
    failures = {"left": 1}
    lock = threading.Lock()

    def flaky(request: BatchRequest) -> int:
        with lock:
            if failures["left"]:
                failures["left"] -= 1
                return 500
        return 200

    receiver.respond = flaky
    server = _server(tmp_path, receiver)
    try:
        _subscribe(server)
        post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=1, seed=32)
        wait_for(lambda: bool(live_events(server, {GATEWAY_EVENT})), 30, "events")
        wait_for(
            lambda: (
                {e["id"] for e in live_events(server, {GATEWAY_EVENT})}
                <= {m["messageId"] for m in receiver.accepted_messages()}
            ),
            60,
            "every event at Segment despite the 500",
        )
        requests = receiver.snapshot()
        assert requests[0].status == 500
        refused = {m["messageId"] for m in requests[0].batch}
        # What Segment refused came again, and then got through.
        assert refused <= {m["messageId"] for m in receiver.accepted_messages()}
    finally:
        server.stop()
