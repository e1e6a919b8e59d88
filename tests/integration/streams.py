"""Helpers for sink tests: twilio-python pointed at a test server, its live feed, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twilio.rest import Client  # type: ignore[import-untyped]

from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server

GATEWAY_EVENT = "com.twilio.voice.insights.call-event.gateway"
GATEWAY_METRICS = "com.twilio.voice.insights.call-metrics.gateway"
SDK_EVENT = "com.twilio.voice.insights.call-event.sdk"
PARTIAL_SUMMARY = "com.twilio.voice.insights.call-summary.partial"
TEST_EVENT = "com.twilio.eventstreams.test-event"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)  # polling interval while waiting on a condition with a deadline
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def twilio(server: Server) -> Client:
    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.events.base_url = server.url
    return client


def live_events(server: Server, types: set[str]) -> list[dict[str, Any]]:
    """Every event of ``types`` the server has produced so far, in the order it made them."""
    events: list[dict[str, Any]] = []
    after = 0
    with server.client() as client:
        while True:
            body = client.get(
                "/callstream/v1/Events", params={"After": after, "Limit": 1000}
            ).json()
            events += [e for e in body["events"] if e["type"] in types]
            if body["next_after"] == after:
                return events
            after = body["next_after"]
