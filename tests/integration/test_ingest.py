"""The ingest API through a real server: durable 202s, all-or-nothing batches, clear errors."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.integration.server import Server

CALL = "CA" + "0123456789abcdef" * 2


def gateway_event(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "gateway_event",
        "id": f"gw-{n}",
        "call_sid": CALL,
        "timestamp": f"2026-11-01T10:00:{n % 60:02d}Z",
        "edge": "carrier_edge",
        "name": "ringing",
        **extra,
    }


def gateway_metric(n: int) -> dict[str, Any]:
    return {
        "kind": "gateway_metric",
        "id": f"gm-{n}",
        "call_sid": CALL,
        "timestamp": "2026-11-01T10:00:10Z",
        "edge": "carrier_edge",
        "direction": "inbound",
        "codec": 0,
        "codec_name": "pcmu",
        "packets_received": 500,
        "packets_lost": 2,
    }


def sdk_event(n: int) -> dict[str, Any]:
    return {
        "kind": "sdk_event",
        "id": f"se-{n}",
        "call_sid": CALL,
        "timestamp": "2026-11-01T10:00:01Z",
        "group": "connection",
        "name": "outgoing",
        "level": "INFO",
        "payload": {"preflight": False, "reconnect": False},
    }


def feed(client: httpx.Client) -> list[dict[str, Any]]:
    """Every event the engine has produced for the account so far."""
    response = client.get("/callstream/v1/Events", params={"After": 0, "Limit": 1000})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def wait_for(
    client: httpx.Client, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        events = feed(client)
        if done(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.05)  # polling interval while waiting on a condition with a deadline


def call_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"].startswith("com.twilio.voice.insights.call-event")]


def test_a_batch_is_applied_once_however_often_it_is_sent(server: Server) -> None:
    batch = [gateway_event(1), gateway_metric(1), sdk_event(1)]
    with server.client() as client:
        first = client.post("/v1/Telemetry", json=batch)
        assert first.status_code == 202, first.text
        assert first.json() == {"accepted": 3}
        again = client.post("/v1/Telemetry", json=[*batch, gateway_event(2, name="answered")])
        assert again.json() == {"accepted": 4}
        # Records of one call are applied in arrival order, so once the new record's
        # event is out, the repeated ones have been dealt with too.
        events = wait_for(
            client, lambda es: any(e["data"]["name"] == "answered" for e in call_events(es))
        )
    names = sorted(e["data"]["name"] for e in call_events(events))
    assert names == ["answered", "outgoing", "ringing"]
    metrics = [e for e in events if e["type"].endswith("call-metrics.gateway")]
    assert len(metrics) == 1


def test_ndjson_batches(server: Server) -> None:
    body = "\n".join(json.dumps(r) for r in [gateway_event(1), sdk_event(2)]) + "\n"
    with server.client() as client:
        response = client.post(
            "/v1/Telemetry", content=body, headers={"content-type": "application/x-ndjson"}
        )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 2


def test_a_bad_batch_names_each_bad_record_and_stores_nothing(server: Server) -> None:
    bad_sid = gateway_event(2, call_sid="CA-not-a-sid")
    no_edge = gateway_event(4)
    del no_edge["edge"]
    batch = [gateway_event(1), bad_sid, gateway_event(3), no_edge]
    with server.client() as client:
        response = client.post("/v1/Telemetry", json=batch)
        assert response.status_code == 400
        body = response.json()
        assert body["status"] == 400 and body["code"] == 20001
        assert "more_info" in body and "nothing was stored" in body["message"]
        errors = body["details"]["errors"]
        assert [(e["index"], e["field"]) for e in errors] == [(1, "call_sid"), (3, "edge")]
        # The good records of the refused batch were not stored: they are new now.
        retry = client.post(
            "/v1/Telemetry", json=[gateway_event(1), gateway_event(3, name="answered")]
        )
        assert retry.json() == {"accepted": 2}
        events = wait_for(client, lambda es: len(call_events(es)) >= 2)
        assert sorted(e["data"]["name"] for e in call_events(events)) == ["answered", "ringing"]


def test_unreadable_bodies_get_400(server: Server) -> None:
    with server.client() as client:
        for body in [b"{not json", b'{"kind": "gateway_event"}', b"[1, 2]"]:
            response = client.post(
                "/v1/Telemetry", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 400, body
            assert response.json()["details"]["errors"]


def test_credentials_are_required_and_checked(server: Server) -> None:
    with server.client(password="wrong-token-wrong-token") as client:
        wrong = client.post("/v1/Telemetry", json=[gateway_event(1)])
    assert wrong.status_code == 401
    assert wrong.json()["code"] == 20003
    with server.client(username="AC" + "f" * 32) as client:
        assert client.post("/v1/Telemetry", json=[gateway_event(1)]).status_code == 401
    import httpx

    anonymous = httpx.post(f"{server.url}/v1/Telemetry", json=[gateway_event(1)])
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    # Nothing from the refused requests was stored.
    with server.client() as client:
        assert client.post("/v1/Telemetry", json=[gateway_event(1)]).json()["accepted"] == 1
        events = wait_for(client, lambda es: len(call_events(es)) >= 1)
        assert len(call_events(events)) == 1


def test_oversized_bodies_get_413(server: Server) -> None:
    huge = b"[" + b" " * (17 * 1024 * 1024) + b"]"
    with server.client() as client:
        response = client.post(
            "/v1/Telemetry", content=huge, headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["status"] == 413


def test_too_many_records_get_413(server: Server) -> None:
    batch = [gateway_event(i) for i in range(10_001)]
    with server.client() as client:
        response = client.post("/v1/Telemetry", json=batch)
    assert response.status_code == 413


def test_unknown_paths_and_methods_answer_in_twilio_json(server: Server) -> None:
    with server.client() as client:
        missing = client.get("/v1/Nope")
        assert missing.status_code == 404 and missing.json()["status"] == 404
        wrong_method = client.get("/v1/Telemetry")
        assert wrong_method.status_code == 405 and wrong_method.json()["status"] == 405
        assert wrong_method.headers["allow"] == "POST"


def test_a_202_survives_kill_9(tmp_path: Path) -> None:
    # The engine is off in the first server so that nothing but the 202 can have
    # recorded the batch before the kill.
    first = Server(tmp_path / "data", extra_env={"CALLSTREAM_ROLES": "api,ingest"}).start()
    batch = [gateway_event(i) for i in range(50)]
    try:
        with first.client() as client:
            assert client.post("/v1/Telemetry", json=batch).json()["accepted"] == 50
    finally:
        first.stop(signal.SIGKILL)
    second = Server(tmp_path / "data").start()
    try:
        with second.client() as client:
            events = wait_for(client, lambda es: len(call_events(es)) >= 50)
        assert len(call_events(events)) == 50
        assert len({e["id"] for e in call_events(events)}) == 50
    finally:
        second.stop()
