"""Delivery operations through the public API of a real server, with real receivers on
127.0.0.1: per-sink status, the attempt log, dead letters and their replay, failed-sink
marking and re-enable, throttling, Prometheus metrics, Standard Webhooks signatures and GET
sinks."""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server
from tests.integration.test_webhook_delivery import (
    FAST,
    GATEWAY_EVENT,
    GATEWAY_METRICS,
    Receiver,
    Request,
    assert_signed,
    live_event_ids,
    subscribe,
    twilio,
    wait_for,
)
from tests.integration.traffic import post_traffic

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
STATUS_FIELDS = {
    *("sink_sid", "sink_type", "status", "delivered", "retried", "failed", "dead_lettered"),
    *("pending", "lag_seconds", "last_error", "last_success_at", "consecutive_failures"),
    "throttled_rate",
}
SECRET = "whsec_" + base64.b64encode(b"callstream-standard-webhooks-key!").decode()
METRICS_TOKEN = "scrape-me"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def _server(tmp_path: Path, **env: str) -> Server:
    return Server(tmp_path / "data", extra_env={**FAST, **env}).start()


def _status(server: Server, sink_sid: str) -> dict[str, Any]:
    with server.client() as http:
        response = http.get(f"/callstream/v1/Sinks/{sink_sid}/Status")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def _dead_letters(server: Server, sink_sid: str, page_size: int = 1000) -> list[dict[str, Any]]:
    """Every dead letter, following meta.next_page_url."""
    found: list[dict[str, Any]] = []
    with server.client() as http:
        url: str | None = f"/callstream/v1/Sinks/{sink_sid}/DeadLetters?PageSize={page_size}"
        while url is not None:
            response = http.get(url)
            assert response.status_code == 200, response.text
            page = response.json()
            found += page["dead_letters"]
            url = page["meta"]["next_page_url"]
    return found


def _replay(server: Server, sink_sid: str, **form: str) -> int:
    with server.client() as http:
        response = http.post(f"/callstream/v1/Sinks/{sink_sid}/DeadLetters/Replay", data=form)
        assert response.status_code == 200, response.text
        replayed: int = response.json()["replayed"]
        return replayed


def _metrics(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_dead_letters_listed_paged_and_replayed(tmp_path: Path, receiver: Receiver) -> None:
    """A 4xx receiver dead-letters every event; the API lists them (paged), replays one, a
    time range and the rest once the receiver is fixed; the counters say so and survive a
    restart; another account sees none of it."""
    refuse = threading.Event()
    refuse.set()
    receiver.respond = lambda request: 400 if refuse.is_set() else 200
    server = _server(tmp_path)
    try:
        client = twilio(server)
        sink_sid = subscribe(client, receiver.url(), batch=False, types=[GATEWAY_EVENT])
        post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=1, seed=31)
        wait_for(lambda: len(live_event_ids(server, {GATEWAY_EVENT})) > 3, 30, "events")
        expected = live_event_ids(server, {GATEWAY_EVENT})
        wait_for(
            lambda: {d["event_id"] for d in _dead_letters(server, sink_sid)} >= expected,
            30,
            "every event dead-lettered",
        )
        status = _status(server, sink_sid)
        assert set(status) == STATUS_FIELDS
        assert status["sink_sid"] == sink_sid and status["sink_type"] == "webhook"
        assert status["dead_lettered"] == status["failed"] == len(expected)
        assert status["delivered"] == 0 and status["pending"] == 0
        assert status["lag_seconds"] is None and status["last_success_at"] is None
        assert "HTTP 400 (91305)" in status["last_error"]
        assert status["consecutive_failures"] >= len(expected)
        assert status["throttled_rate"] is None  # a 4xx does not throttle

        with server.client() as http:
            listed = http.get("/callstream/v1/Sinks/Status").json()["sinks"]
            assert [s["sink_sid"] for s in listed] == [sink_sid]
            attempts = http.get(
                f"/callstream/v1/Sinks/{sink_sid}/Attempts", params={"PageSize": 3}
            ).json()["attempts"]
        assert len(attempts) == 3
        assert [a["time"] for a in attempts] == sorted((a["time"] for a in attempts), reverse=True)
        for attempt in attempts:
            assert ISO_MS.match(attempt["time"])
            assert (attempt["ok"], attempt["status"], attempt["events"]) == (False, 400, 1)
            assert attempt["duration_ms"] >= 0 and "91305" in attempt["error"]

        # Pages of two hold each dead letter once, with its CloudEvent.
        paged = _dead_letters(server, sink_sid, page_size=2)
        assert [d["event_id"] for d in paged] == [
            d["event_id"] for d in _dead_letters(server, sink_sid)
        ]
        assert {d["event_id"] for d in paged} == expected
        for dead in paged:
            assert dead["event"]["id"] == dead["event_id"] and dead["type"] == GATEWAY_EVENT
            assert dead["event"]["type"] == GATEWAY_EVENT and dead["attempts"] == 1
            assert ISO_MS.match(dead["dead_at"]) and ISO_MS.match(dead["enqueued_at"])
            assert "400" in dead["reason"]

        # Another account: not found, like an unknown sid; its own list is empty.
        other_sid, other_token = _other_account(server)
        with server.client(other_sid, other_token) as http:
            for path in ("Status", "Attempts", "DeadLetters"):
                response = http.get(f"/callstream/v1/Sinks/{sink_sid}/{path}")
                assert response.status_code == 404 and response.json()["code"] == 20404
            for path in ("DeadLetters/Replay", "Enable"):
                assert http.post(f"/callstream/v1/Sinks/{sink_sid}/{path}").status_code == 404
            assert http.get("/callstream/v1/Sinks/Status").json() == {"sinks": []}
        assert httpx.get(f"{server.url}/callstream/v1/Sinks/Status").status_code == 401
        with server.client() as http:
            bad = http.post(
                f"/callstream/v1/Sinks/{sink_sid}/DeadLetters/Replay", data={"StartTime": "soon"}
            )
            assert bad.status_code == 400 and bad.json()["details"] == {"parameter": "StartTime"}
            bad = http.get(f"/callstream/v1/Sinks/{sink_sid}/DeadLetters?PageToken=nope")
            assert bad.status_code == 400
            # /metrics is closed when no metrics_token is set, and says how to open it.
            closed = httpx.get(f"{server.url}/metrics")
            assert closed.status_code == 404 and "METRICS_TOKEN" in closed.json()["message"]

        # Fixed receiver: replay one event by id, then a time range, then the rest.
        refuse.clear()
        first = paged[0]["event_id"]
        assert _replay(server, sink_sid, EventId=first) == 1
        wait_for(lambda: first in receiver.event_ids(), 20, "the replayed event")
        remaining = _dead_letters(server, sink_sid)
        assert first not in {d["event_id"] for d in remaining}
        dead_times = sorted(d["dead_at"] for d in remaining)
        assert _replay(server, sink_sid, EndTime="2000-01-01T00:00:00Z") == 0
        middle = remaining[len(remaining) // 2]
        in_range = [d for d in remaining if d["dead_at"] == middle["dead_at"]]
        # dead_at is shown to the millisecond; a range one millisecond wide around it
        # replays the letters that died in that millisecond and none other.
        moment = middle["dead_at"]
        replayed = _replay(server, sink_sid, StartTime=moment, EndTime=_plus_ms(moment, 1))
        assert replayed == len(in_range) >= 1
        assert _replay(server, sink_sid) == len(remaining) - replayed
        assert _dead_letters(server, sink_sid) == []
        assert _replay(server, sink_sid) == 0
        assert dead_times  # (the range test had letters to work on)
        wait_for(lambda: expected <= set(receiver.event_ids()), 30, "every replayed event")
        wait_for(lambda: _status(server, sink_sid)["pending"] == 0, 20, "an empty queue")
        for request in receiver.snapshot():
            if request.events and not refuse.is_set():
                assert_signed(request)
        status = _status(server, sink_sid)
        assert status["delivered"] == len(expected)
        assert status["dead_lettered"] == len(expected)  # a cumulative count
        assert status["consecutive_failures"] == 0 and ISO_MS.match(status["last_success_at"])
    finally:
        server.stop()

    # Counters live in the store: a restart keeps them.
    restarted = Server(tmp_path / "data", port=server.port, extra_env=FAST).start()
    try:
        again = _status(restarted, sink_sid)
        assert {k: again[k] for k in ("delivered", "failed", "dead_lettered")} == {
            k: status[k] for k in ("delivered", "failed", "dead_lettered")
        }
    finally:
        restarted.stop()


def _plus_ms(moment: str, ms: int) -> str:
    from datetime import datetime, timedelta

    parsed = datetime.fromisoformat(moment) + timedelta(milliseconds=ms)
    return parsed.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _other_account(server: Server) -> tuple[str, str]:
    """A second account, made with the CLI on the running server's data directory."""
    import subprocess
    import sys

    made = subprocess.run(
        [sys.executable, "-m", "callstream", "accounts", "create", "--json"],
        env={**os.environ, "CALLSTREAM_DATA_DIR": str(server.data_dir)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    account = json.loads(made.stdout)
    return account["account_sid"], account["auth_token"]


def test_failing_sink_is_throttled_marked_failed_keeps_events_and_recovers(
    tmp_path: Path, receiver: Receiver
) -> None:
    healthy = threading.Event()
    receiver.respond = lambda request: 200 if healthy.is_set() else 503
    server = _server(
        tmp_path,
        CALLSTREAM_SINK_FAILURE_THRESHOLD="3",
        CALLSTREAM_DELIVERY_THROTTLE_RECOVERY="1h",
        CALLSTREAM_METRICS_TOKEN=METRICS_TOKEN,
    )
    try:
        client = twilio(server)
        types = [GATEWAY_EVENT, GATEWAY_METRICS]
        sink_sid = subscribe(client, receiver.url(), batch=True, types=types)
        post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=1, seed=32)
        wait_for(
            lambda: client.events.v1.sinks(sink_sid).fetch().status == "failed",
            30,
            "the sink marked failed",
        )
        status = _status(server, sink_sid)
        assert status["status"] == "failed" and status["consecutive_failures"] >= 3
        assert status["throttled_rate"] is not None and 0 < status["throttled_rate"] <= 100
        assert "HTTP 503 (91306)" in status["last_error"] and "(91302)" in status["last_error"]
        assert status["retried"] >= 1 and status["delivered"] == 0

        # A failed sink keeps its subscription and keeps queueing events: nothing is lost.
        before = len(live_event_ids(server, set(types)))
        post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=1, seed=33)
        wait_for(lambda: len(live_event_ids(server, set(types))) > before, 30, "more events")
        wait_for(
            lambda: _status(server, sink_sid)["pending"] >= len(live_event_ids(server, set(types))),
            30,
            "the new events queued for the failed sink",
        )
        assert _status(server, sink_sid)["lag_seconds"] > 0

        # Enable: active again at once, failures forgotten; the failures mark it again.
        with server.client() as http:
            enabled = http.post(f"/callstream/v1/Sinks/{sink_sid}/Enable")
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["status"] == "active"
        assert enabled.json()["consecutive_failures"] == 0
        wait_for(lambda: _status(server, sink_sid)["status"] == "failed", 30, "failed once more")

        # The receiver recovers: the first success makes the sink active by itself, and
        # every event arrives (still throttled, so at most about 100 events/s).
        healthy.set()
        expected = live_event_ids(server, set(types))
        wait_for(lambda: expected <= set(receiver.event_ids()), 60, "every event delivered")
        wait_for(lambda: _status(server, sink_sid)["pending"] == 0, 30, "an empty queue")
        status = _status(server, sink_sid)
        assert status["status"] == "active" and status["consecutive_failures"] == 0
        assert status["throttled_rate"] is not None  # recovery is an hour away
        assert status["delivered"] == len(expected) and status["dead_lettered"] == 0
        with server.client() as http:
            attempts = http.get(
                f"/callstream/v1/Sinks/{sink_sid}/Attempts", params={"PageSize": 200}
            ).json()["attempts"]
        assert attempts[0]["ok"] and any("91302" in (a["error"] or "") for a in attempts)

        # Metrics agree with the status API, and count ingest.
        samples = _metrics(server)
        for outcome in ("delivered", "failed", "retried", "dead_lettered"):
            key = (
                "callstream_delivery_events_total",
                (("outcome", outcome), ("sink_sid", sink_sid)),
            )
            assert samples[key] == status[outcome], outcome
        assert samples[("callstream_delivery_queue_depth", (("sink_sid", sink_sid),))] == 0
        assert samples[("callstream_delivery_throttled_rate", (("sink_sid", sink_sid),))] > 0
        assert samples[("callstream_ingest_records_total", ())] > 0
        assert samples[("callstream_ingest_requests_total", (("status", "202"),))] >= 2
        latency = ("callstream_delivery_latency_seconds_count", (("sink_type", "webhook"),))
        assert samples[latency] == len(expected)
        assert ("callstream_engine_timers_pending", ()) in samples
        assert ("callstream_engine_partition_lag_offsets", (("partition", "0"),)) in samples
        wrong = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
    finally:
        server.stop()


def test_standard_webhooks_signatures(tmp_path: Path, receiver: Receiver) -> None:
    server = _server(tmp_path)
    try:
        client = twilio(server)
        with server.client() as http:
            bad = http.post(
                "/v1/Sinks",
                data={
                    "Description": "bad secret",
                    "SinkType": "webhook",
                    "SinkConfiguration": json.dumps(
                        {
                            "destination": receiver.url(),
                            "method": "POST",
                            "batch_events": True,
                            "standard_webhooks_secret": "whsec_short",
                        }
                    ),
                },
            )
        assert bad.status_code == 400 and "standard_webhooks_secret" in bad.json()["message"]
        sink = client.events.v1.sinks.create(
            description="standard webhooks",
            sink_type="webhook",
            sink_configuration={
                "destination": receiver.url(),
                "method": "POST",
                "batch_events": True,
                "standard_webhooks_secret": SECRET,
            },
        )
        types = [GATEWAY_EVENT, GATEWAY_METRICS]
        client.events.v1.subscriptions.create(
            description="sw", sink_sid=sink.sid, types=[{"type": t} for t in types]
        )
        post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=2, seed=34)
        wait_for(lambda: len(live_event_ids(server, set(types))) > 0, 30, "events")
        wait_for(
            lambda: live_event_ids(server, set(types)) <= set(receiver.event_ids()),
            60,
            "every event at the receiver",
        )
        requests = receiver.snapshot()
        assert any(len(r.events) > 1 for r in requests)
        verifier = Webhook(SECRET)
        for request in requests:
            assert_signed(request)  # Twilio's signature stays
            assert verifier.verify(request.body, request.headers) == request.events
            message_id = request.headers["webhook-id"]
            if len(request.events) == 1:
                assert message_id == request.events[0]["id"]
            else:
                assert message_id.startswith("batch_")
            tampered = request.body.replace('"', " ", 1)
            with pytest.raises(Exception, match="signature"):
                verifier.verify(tampered, request.headers)
    finally:
        server.stop()


def test_get_sink_carries_one_signed_event_per_request(tmp_path: Path, receiver: Receiver) -> None:
    server = _server(tmp_path)
    try:
        client = twilio(server)
        sink = client.events.v1.sinks.create(
            description="get",
            sink_type="webhook",
            sink_configuration={
                "destination": receiver.url("/hook?tenant=7"),
                "method": "GET",
                "batch_events": True,  # ignored: a GET carries one event
                "standard_webhooks_secret": SECRET,
            },
        )
        client.events.v1.subscriptions.create(
            description="get", sink_sid=sink.sid, types=[{"type": GATEWAY_EVENT}]
        )
        post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=1, seed=35)
        wait_for(lambda: len(live_event_ids(server, {GATEWAY_EVENT})) > 0, 30, "events")

        def received() -> list[dict[str, Any]]:
            return [_get_event(r) for r in receiver.snapshot()]

        wait_for(
            lambda: live_event_ids(server, {GATEWAY_EVENT}) <= {e["id"] for e in received()},
            60,
            "every event at the receiver",
        )
        validator = RequestValidator(AUTH_TOKEN)
        verifier = Webhook(SECRET)
        for request in receiver.snapshot():
            assert request.method == "GET" and request.body == ""
            assert "bodySHA256" not in request.url and "tenant=7&event=" in request.url
            assert validator.validate(request.url, {}, request.signature)
            assert not validator.validate(request.url + "x", {}, request.signature)
            event = _get_event(request)
            assert event["type"] == GATEWAY_EVENT
            signed = verifier.verify(_get_raw(request), request.headers)
            assert signed["id"] == request.headers["webhook-id"] == event["id"]
    finally:
        server.stop()


def _get_raw(request: Request) -> bytes:
    (encoded,) = parse_qs(urlsplit(request.url).query)["event"]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def _get_event(request: Request) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(_get_raw(request))
    return event
