"""Readiness and graceful shutdown of a real `callstream serve`."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from callstream.lifecycle import SHUTDOWN_GRACE
from callstream.model.telemetry import encode_batch
from callstream.sim import SimConfig, Simulation
from tests.integration.server import Server


class SlowReceiver:
    """A webhook receiver that takes a while to answer, so deliveries are in flight."""

    def __init__(self, delay: float) -> None:
        self.requests = 0
        self.first = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests += 1
                receiver.first.set()
                time.sleep(delay)  # the slow receiver under test, not synchronisation
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def batches(size: int) -> Iterator[bytes]:
    records = [r for _, r in Simulation(SimConfig(calls=200, concurrency=50, seed=11))]
    for start in range(0, len(records), size):
        yield encode_batch(records[start : start + size])


def test_readyz_and_a_clean_exit_on_sigterm_under_load(tmp_path: Path) -> None:
    server = Server(
        tmp_path / "data", extra_env={"CALLSTREAM_ALLOW_PRIVATE_DESTINATIONS": "true"}
    ).start()
    receiver = SlowReceiver(delay=0.5)
    stop_load = threading.Event()
    accepted: list[int] = []
    polled: list[httpx.Response] = []
    try:
        # Probes need no credentials and see no account data.
        ready = httpx.get(f"{server.url}/readyz", timeout=5)
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "roles": ["api", "delivery", "engine", "ingest"],
        }
        assert httpx.get(f"{server.url}/healthz", timeout=5).json()["status"] == "ok"

        with server.client() as client:
            config = {"destination": receiver.url, "method": "POST", "batch_events": False}
            sink = client.post(
                "/v1/Sinks",
                data={
                    "Description": "slow",
                    "SinkType": "webhook",
                    "SinkConfiguration": json.dumps(config),
                },
            ).json()
            types = "com.twilio.voice.insights.call-event.gateway"
            subscribed = client.post(
                "/v1/Subscriptions",
                data={
                    "Description": "gateway events",
                    "SinkSid": sink["sid"],
                    "Types": json.dumps({"type": types}),
                },
            )
            assert subscribed.status_code == 201, subscribed.text

        def load() -> None:
            with server.client() as client:
                for body in batches(300):
                    if stop_load.is_set():
                        return
                    try:
                        response = client.post(
                            "/v1/Telemetry",
                            content=body,
                            headers={"content-type": "application/json"},
                        )
                    except httpx.TransportError:
                        return  # the server has stopped listening
                    accepted.append(response.status_code)

        def long_poll() -> None:
            # Waits up to 30 s for events that never come; the stop must not wait for it.
            with server.client() as client, contextlib.suppress(httpx.TransportError):
                response = client.get("/callstream/v1/Events", params={"After": 10**9, "Wait": 30})
                polled.append(response)

        threads = [threading.Thread(target=load), threading.Thread(target=long_poll)]
        for thread in threads:
            thread.start()
        assert receiver.first.wait(60), "no delivery started"
        deadline = time.monotonic() + 30
        while not accepted and time.monotonic() < deadline:
            time.sleep(0.05)  # polling interval while waiting on a condition with a deadline
        assert accepted, "no ingest request answered"

        began = time.monotonic()
        code = server.stop(signal.SIGTERM, timeout=60)
        took = time.monotonic() - began
        stop_load.set()
        for thread in threads:
            thread.join(40)
    finally:
        stop_load.set()
        server.stop()
        receiver.close()
    logs = server.logs()
    assert code == 0, logs
    assert "Traceback" not in logs and "ERROR" not in logs
    # The long poll was answered, not dropped: a 503 in Twilio's error shape.
    assert [r.status_code for r in polled] == [503]
    assert polled[0].json()["code"] == 20503 and polled[0].headers["retry-after"] == "1"
    assert set(accepted) <= {202}, accepted
    # Requests get SHUTDOWN_GRACE, then deliveries get SHUTDOWN_GRACE; the 30 s long poll
    # is cut short.
    assert took < 2 * SHUTDOWN_GRACE + 8, took
