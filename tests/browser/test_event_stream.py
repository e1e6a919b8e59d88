"""GET /callstream/v1/Events/Stream, the console's live feed, read as a plain SSE client:
it carries exactly the authenticated account's events, and resumes from an id."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from callstream.model.telemetry import encode_batch
from callstream.sim import SimConfig, Simulation
from tests.browser.conftest import start_server, wait_until
from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server
from tests.integration.traffic import NO_LOSS, post_traffic

STREAM = "/callstream/v1/Events/Stream"


def create_account(data_dir: Path) -> tuple[str, str]:
    command = ["accounts", "create", "--json", "--data-dir", str(data_dir)]
    created = subprocess.run(
        [sys.executable, "-m", "callstream", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    account = json.loads(created.stdout)
    return account["account_sid"], account["auth_token"]


class Reader:
    """Reads one SSE response in a thread, keeping its ``events`` messages."""

    def __init__(self, server: Server, params: dict[str, str]) -> None:
        self.messages: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(
            base_url=server.url, auth=(ACCOUNT_SID, AUTH_TOKEN), timeout=None
        )
        self._response = self._client.send(
            self._client.build_request("GET", "/callstream/v1/Events/Stream", params=params),
            stream=True,
        )
        assert self._response.status_code == 200
        assert self._response.headers["content-type"].startswith("text/event-stream")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        event, data = "", ""
        try:
            for line in self._response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line.startswith("id: "):
                    with self._lock:
                        self.ids.append(line[4:])
                elif line == "" and event == "events":
                    with self._lock:
                        self.messages.append(json.loads(data))
                    event, data = "", ""
        except httpx.HTTPError:
            pass  # closed by the test

    def counted(self) -> int:
        with self._lock:
            return sum(sum(m["counts"].values()) for m in self.messages)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e for m in self.messages for e in m["events"]]

    def close(self) -> None:
        self._response.close()
        self._client.close()


def log_of(server: Server) -> list[dict[str, Any]]:
    """The account's events through the long-poll feed, for comparison."""
    found: list[dict[str, Any]] = []
    after = 0
    with server.client() as client:
        while True:
            page = client.get("/callstream/v1/Events", params={"After": after, "Limit": 1000})
            body = page.json()
            found += body["events"]
            if body["next_after"] == after:
                return found
            after = body["next_after"]


@pytest.fixture
def two_accounts(tmp_path: Path) -> Iterator[tuple[Server, tuple[str, str]]]:
    other = create_account(tmp_path / "data")
    server = start_server(tmp_path)
    yield server, other
    server.stop()


def test_the_stream_carries_only_the_account_s_events_and_resumes_from_an_id(
    two_accounts: tuple[Server, tuple[str, str]],
) -> None:
    server, other = two_accounts
    everything = Reader(server, {"After": "0"})
    summaries = Reader(
        server, {"After": "0", "Type": "com.twilio.voice.insights.call-summary.partial"}
    )
    try:
        post_traffic(server, *other, calls=3, seed=51)  # another account's: never shown
        calls = post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=3, seed=52)

        def settled() -> list[dict[str, Any]] | None:
            log = log_of(server)
            partials = {e["data"]["call_sid"] for e in log if e["type"].endswith("partial")}
            done = partials >= set(calls) and everything.counted() == len(log)
            return log if done else None

        log = wait_until(settled, 30, "the stream to carry every event of the account")
        assert [e["id"] for e in everything.events()] == [e["id"] for e in log]
        assert {e["data"]["account_sid"] for e in everything.events()} == {ACCOUNT_SID}
        # A Type filter narrows the CloudEvents; the counts still cover every event.
        wait_until(lambda: summaries.counted() == len(log), 15, "the filtered stream's counts")
        assert {e["type"] for e in summaries.events()} == {
            "com.twilio.voice.insights.call-summary.partial"
        }
        assert {e["data"]["call_sid"] for e in summaries.events()} == set(calls)

        # Resuming from an id the stream gave sends only what followed it.
        middle = everything.messages[len(everything.messages) // 2]["next_after"]
        resumed = Reader(server, {"Events": "false"} | {"After": str(middle)})
        try:
            expected = sum(
                sum(m["counts"].values()) for m in everything.messages if m["next_after"] > middle
            )
            wait_until(lambda: resumed.counted() == expected, 15, "the resumed stream")
            assert resumed.events() == []  # Events=false: counts only
        finally:
            resumed.close()
    finally:
        everything.close()
        summaries.close()


def test_clients_leaving_the_stream_do_not_stall_the_server(tmp_path: Path) -> None:
    # A client that goes away gets its response cancelled while it waits on the events log;
    # that wait is shared with the engine and the router, so it must survive the
    # cancellation. Clients leave here while the engine commits (so the log's lock is busy),
    # then traffic must still reach the live feed.
    server = start_server(tmp_path)
    simulation = Simulation(SimConfig(calls=8, seed=61, delivery=NO_LOSS))
    records = [record for _, record in simulation]
    calls = {plan.call_sid for plan in simulation.plans()}
    try:
        with httpx.Client(base_url=server.url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as client:

            def post_slowly() -> None:
                for start in range(0, len(records), 50):
                    with server.client() as poster:
                        poster.post(
                            "/v1/Telemetry",
                            content=encode_batch(records[start : start + 50]),
                            headers={"content-type": "application/json"},
                        )

            posting = threading.Thread(target=post_slowly)
            posting.start()
            while posting.is_alive():
                streams = [
                    client.send(client.build_request("GET", STREAM), stream=True) for _ in range(4)
                ]
                for response in streams:
                    assert next(response.iter_lines()).startswith("retry:")
                for response in streams:
                    response.close()
            posting.join()

            def summarised() -> bool:
                log = log_of(server)
                return {e["data"]["call_sid"] for e in log if "call-summary" in e["type"]} >= calls

            wait_until(summarised, 30, "the engine's summaries after the clients left")
            # The long-poll still wakes on a commit (the log's wait is not stuck).
            tail = client.get("/callstream/v1/Events", params={"Limit": 1}).json()["next_after"]
            post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=1, seed=62)
            woke = client.get(
                "/callstream/v1/Events",
                params={"After": tail, "Wait": 10, "Limit": 1000},
                timeout=20,
            )
            assert woke.status_code == 200 and woke.json()["events"]
    finally:
        server.stop()
