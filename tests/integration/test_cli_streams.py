"""`callstream sinks|subscriptions|dlq` as subprocesses against a real server and receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server

INSIGHTS_TYPES = {
    "com.twilio.voice.insights.call-event.gateway",
    "com.twilio.voice.insights.call-event.sdk",
    "com.twilio.voice.insights.call-metrics.gateway",
    "com.twilio.voice.insights.call-metrics.sdk",
    "com.twilio.voice.insights.call-summary.partial",
    "com.twilio.voice.insights.call-summary.predicted-complete",
    "com.twilio.voice.insights.call-summary.complete",
}


class Receiver:
    """A webhook receiver on 127.0.0.1 that refuses (400) or accepts (200) what it gets."""

    def __init__(self) -> None:
        self.accept = False
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.accept:
                    receiver.received.extend(json.loads(body))
                self.send_response(200 if receiver.accept else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(
        tmp_path / "data", extra_env={"CALLSTREAM_ALLOW_PRIVATE_DESTINATIONS": "true"}
    ).start()
    yield running
    running.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


def cli(server: Server, *args: str, token: str = AUTH_TOKEN) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CALLSTREAM_URL": server.url,
        "CALLSTREAM_ACCOUNT_SID": ACCOUNT_SID,
        "CALLSTREAM_AUTH_TOKEN": token,
    }
    return subprocess.run(
        [sys.executable, "-m", "callstream", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)  # polling interval while waiting on a condition with a deadline
    raise AssertionError(f"condition not met within {timeout}s")


def test_sinks_and_subscriptions_round_trip(server: Server, receiver: Receiver) -> None:
    sink = ok_json(
        cli(
            server,
            "sinks",
            "create-webhook",
            receiver.url,
            "--batch",
            "--description",
            "mine",
            "--json",
        )
    )
    assert sink["sid"].startswith("DG") and sink["status"] == "active"
    assert sink["sink_configuration"] == {
        "destination": receiver.url,
        "method": "POST",
        "batch_events": True,
    }
    listed = ok_json(cli(server, "sinks", "list", "--json"))
    assert [s["sid"] for s in listed] == [sink["sid"]]
    table = cli(server, "sinks", "list")
    assert table.returncode == 0 and sink["sid"] in table.stdout and "mine" in table.stdout

    subscription = ok_json(
        cli(server, "subscriptions", "create", "--sink", sink["sid"], "--types", "all", "--json")
    )
    assert subscription["sid"].startswith("DF") and subscription["sink_sid"] == sink["sid"]
    assert {t["type"] for t in subscription["types"]} == INSIGHTS_TYPES
    assert len(subscription["types"]) == 7
    listed_subs = ok_json(cli(server, "subscriptions", "list", "--json"))
    assert [s["sid"] for s in listed_subs] == [subscription["sid"]]
    # The server holds what the CLI says it created, with the latest schema versions.
    with server.client() as client:
        events = client.get(f"/v1/Subscriptions/{subscription['sid']}/SubscribedEvents").json()
    versions = {t["type"]: t["schema_version"] for t in events["types"]}
    assert versions["com.twilio.voice.insights.call-event.sdk"] == 3
    assert versions["com.twilio.voice.insights.call-summary.complete"] == 2

    # The API refuses: exit 1 with Twilio's message.
    in_use = cli(server, "sinks", "delete", sink["sid"])
    assert in_use.returncode == 1
    assert f"is in use by subscription {subscription['sid']}" in in_use.stderr
    missing = cli(server, "sinks", "delete", "DG" + "0" * 32)
    assert missing.returncode == 1
    assert f"Sink DG{'0' * 32} was not found" in missing.stderr and "91001" in missing.stderr
    bad_version = cli(
        server,
        "subscriptions",
        "create",
        "--sink",
        sink["sid"],
        "--types",
        "call-metrics.sdk",
        "--schema-version",
        "9",
    )
    assert bad_version.returncode == 1 and "Schema version 9 does not exist" in bad_version.stderr
    wrong_token = cli(server, "sinks", "list", token="not-the-token-000")
    assert wrong_token.returncode == 1 and "HTTP 401" in wrong_token.stderr

    deleted = cli(server, "subscriptions", "delete", subscription["sid"])
    assert deleted.returncode == 0, deleted.stderr
    assert ok_json(cli(server, "subscriptions", "list", "--json")) == []
    assert ok_json(cli(server, "sinks", "delete", sink["sid"], "--json")) == {
        "deleted": sink["sid"]
    }
    assert ok_json(cli(server, "sinks", "list", "--json")) == []


def test_usage_errors_exit_2(server: Server) -> None:
    no_credentials = subprocess.run(
        [sys.executable, "-m", "callstream", "sinks", "list", "--url", server.url],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("CALLSTREAM_")},
    )
    assert no_credentials.returncode == 2 and "--account-sid" in no_credentials.stderr
    both = cli(server, "dlq", "replay", "DG" + "0" * 32, "--event-id", "x", "--since", "2026-01-01")
    assert both.returncode == 2 and "not both" in both.stderr
    bad_time = cli(server, "dlq", "replay", "DG" + "0" * 32, "--since", "yesterday")
    assert bad_time.returncode == 2 and "ISO 8601" in bad_time.stderr
    assert cli(server, "subscriptions", "create", "--types", "all").returncode == 2  # no --sink


def test_status_dead_letters_and_replay(server: Server, receiver: Receiver) -> None:
    sink = ok_json(cli(server, "sinks", "create-webhook", receiver.url, "--json"))
    sid = sink["sid"]
    # The receiver answers 400, so the test event is refused and dead-lettered at once.
    assert ok_json(cli(server, "sinks", "test", sid, "--json")) == {"result": "submitted"}
    letters = wait_for(lambda: ok_json(cli(server, "dlq", "list", sid, "--json")))
    assert len(letters) == 1
    assert letters[0]["type"] == "com.twilio.eventstreams.test-event"
    assert "400" in letters[0]["reason"]
    table = cli(server, "dlq", "list", sid)
    assert table.returncode == 0 and letters[0]["event_id"] in table.stdout

    status = ok_json(cli(server, "sinks", "status", sid, "--json"))
    assert status["sink_sid"] == sid and status["dead_lettered"] == 1
    assert status["delivered"] == 0 and "400" in (status["last_error"] or "")
    every = ok_json(cli(server, "sinks", "status", "--json"))
    assert [s["sink_sid"] for s in every] == [sid]
    shown = cli(server, "sinks", "status")
    assert shown.returncode == 0 and sid in shown.stdout

    receiver.accept = True
    replayed = ok_json(
        cli(server, "dlq", "replay", sid, "--event-id", letters[0]["event_id"], "--json")
    )
    assert replayed == {"replayed": 1}
    got = wait_for(lambda: receiver.received)
    assert got[0]["id"] == letters[0]["event_id"]
    wait_for(lambda: ok_json(cli(server, "sinks", "status", sid, "--json"))["delivered"] == 1)

    missing = cli(server, "dlq", "list", "DG" + "0" * 32)
    assert missing.returncode == 1 and "not found" in missing.stderr.lower()
