"""The Segment driver against a local stand-in of Segment's batch API: limits, splitting,
partial success, and which failures are retried."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from callstream.sinks.drivers import Outcome
from callstream.sinks.segment import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES, SegmentDriver
from callstream.store.control import Sink
from tests.integration.segment_receiver import BatchRequest, SegmentReceiver
from tests.integration.server import free_port

WRITE_KEY = "wk-123"


@pytest.fixture
def receiver() -> Iterator[SegmentReceiver]:
    running = SegmentReceiver(WRITE_KEY).start()
    yield running
    running.stop()


def segment_sink(write_key: str = WRITE_KEY) -> Sink:
    return Sink(
        sid="DG" + "3" * 32,
        account_sid="AC" + "4" * 32,
        description="segment",
        sink_type="segment",
        configuration={"write_key": write_key},
        status="active",
        date_created=0.0,
        date_updated=0.0,
    )


def event(n: int, pad: int = 0, data: Any = None) -> bytes:
    envelope = {
        "specversion": "1.0",
        "type": "com.twilio.voice.insights.call-event.gateway",
        "source": "/v1/Voice/CA1/Events",
        "id": f"EZ{n:032x}",
        "time": "2026-11-22T05:00:00.000Z",
        "data": {"call_sid": f"CA{n % 3}", "pad": "x" * pad} if data is None else data,
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def send(base_url: str, events: list[bytes], write_key: str = WRITE_KEY) -> Outcome:
    async def main() -> Outcome:
        driver = SegmentDriver(base_url=base_url + "/", timeout=2.0)
        try:
            return await driver.send(segment_sink(write_key), "", events)
        finally:
            await driver.close()

    return asyncio.run(main())


def test_large_requests_are_split_and_oversized_events_refused(
    receiver: SegmentReceiver,
) -> None:
    events = [event(i, pad=20_000) for i in range(60)]  # ~1.2 MB in all
    events.insert(7, event(99, pad=MAX_MESSAGE_BYTES))  # can never be one Segment call
    outcome = send(receiver.url, events)
    assert not outcome.ok and not outcome.retry
    assert outcome.delivered == tuple(i for i in range(61) if i != 7)
    assert "event 7 is" in (outcome.error or "")
    requests = receiver.snapshot()
    assert len(requests) == 3 and all(r.status == 200 for r in requests)
    assert all(len(r.body) <= MAX_BATCH_BYTES for r in requests)
    sent = [m["messageId"] for r in requests for m in r.batch]
    assert sent == [f"EZ{i:032x}" for i in range(60)]  # in order, each once


def test_data_that_is_not_an_object_becomes_a_property(receiver: SegmentReceiver) -> None:
    assert send(receiver.url, [event(1, data='{"test_id":"t-1"}')]).ok
    (message,) = receiver.snapshot()[0].batch
    assert message["properties"] == {"data": '{"test_id":"t-1"}'}
    assert message["anonymousId"] == message["messageId"] == f"EZ{1:032x}"


def test_a_failing_request_keeps_what_went_before(receiver: SegmentReceiver) -> None:
    def second_fails(request: BatchRequest) -> int:
        return 503 if len(receiver.snapshot()) == 1 else 200

    receiver.respond = second_fails
    events = [event(i, pad=20_000) for i in range(60)]
    outcome = send(receiver.url, events)
    assert not outcome.ok and outcome.retry and outcome.status == 503
    first = receiver.snapshot()[0]
    assert outcome.delivered == tuple(range(len(first.batch)))
    assert len(receiver.snapshot()) == 2  # the third request waits for the worker's retry


@pytest.mark.parametrize(("status", "retry"), [(429, True), (500, True), (400, False)])
def test_statuses(receiver: SegmentReceiver, status: int, retry: bool) -> None:
    receiver.respond = lambda request: status
    outcome = send(receiver.url, [event(1)])
    assert not outcome.ok and outcome.retry is retry and outcome.status == status
    assert outcome.delivered == ()


def test_a_wrong_write_key_is_not_retried(receiver: SegmentReceiver) -> None:
    outcome = send(receiver.url, [event(1)], write_key="wrong")
    assert not outcome.ok and not outcome.retry and outcome.status == 401


def test_no_connection_is_retried() -> None:
    outcome = send(f"http://127.0.0.1:{free_port()}", [event(1)])  # nothing listens there
    assert not outcome.ok and outcome.retry and outcome.status is None
    assert "91307" in (outcome.error or "")
