"""The server keeps to the OpenAPI document it serves: a schemathesis run against a real server.

Every operation of ``GET /openapi.json`` gets generated requests with valid credentials, in
schemathesis' examples, coverage and fuzzing phases, with valid and invalid data. The run
fails on any 5xx and on any response whose status code, content type or body the document
does not allow for that operation. It is bounded (``MAX_EXAMPLES`` per operation and phase,
no stateful phase) and deterministic (schemathesis' deterministic generation, which also
keeps no example database).

The run goes through schemathesis' command line: its pytest plugin cannot load a schema
from a fixture under pytest 9 (schemathesis 4.32 reads a private pytest attribute), and the
command line is the interface that runs all three phases.

The Voice Insights routes mostly get a real call with a complete summary (a schemathesis
dictionary bound to ``CallSid``), so their bodies are checked and not only their 404s.
Live-feed requests never wait (``Wait`` is fixed at 0): a long poll with nothing to return
would spend the time budget doing nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server
from tests.integration.traffic import post_traffic

MAX_EXAMPLES = 12
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
TIME_BUDGET = 240  # seconds; the run takes about 40 s on an idle 2-core machine


def _completed_calls(server: Server, calls: list[str], timeout: float = 30) -> list[str]:
    """Waits until every call has its complete summary; returns the calls by events, most first."""
    deadline = time.monotonic() + timeout
    with server.client() as http:
        while True:
            page = http.get(
                "/v1/Voice/Summaries", params={"ProcessingState": "completed", "PageSize": 100}
            )
            assert page.status_code == 200, page.text
            done = {s["call_sid"] for s in page.json()["call_summaries"]}
            if done >= set(calls):
                break
            assert time.monotonic() < deadline, "no complete summaries in time"
            time.sleep(0.2)  # polling interval while waiting on a condition with a deadline

        def events(call_sid: str) -> int:
            listed = http.get(f"/v1/Voice/{call_sid}/Events", params={"PageSize": 1000})
            return len(listed.json()["events"])

        return sorted(calls, key=events, reverse=True)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list[str], Path]]:
    root = tmp_path_factory.mktemp("openapi")
    server = Server(
        root / "data",
        extra_env={"CALLSTREAM_PARTIAL_AFTER": "1s", "CALLSTREAM_COMPLETE_AFTER": "3s"},
    ).start()
    try:
        calls = post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=4, seed=21)
        yield server, _completed_calls(server, calls), root
    finally:
        server.stop()


def test_the_document_is_served_publicly(running: tuple[Server, list[str], Path]) -> None:
    server, _, _ = running
    response = httpx.get(f"{server.url}/openapi.json", timeout=10)  # no credentials
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert document["servers"] == [{"url": server.url}]
    assert document["components"]["securitySchemes"]["accountSid_authToken"]["scheme"] == "basic"
    for path in (
        "/v1/Telemetry",
        "/callstream/v1/Events",
        "/healthz",
        "/v1/Voice/Summaries",
        "/v1/Voice/{CallSid}",
        "/v1/Voice/{CallSid}/Summary",
        "/v1/Voice/{CallSid}/Events",
        "/v1/Voice/{CallSid}/Metrics",
    ):
        assert path in document["paths"], path


def test_every_response_keeps_to_the_document(running: tuple[Server, list[str], Path]) -> None:
    server, calls, root = running
    config = root / "schemathesis.toml"
    values = ", ".join(json.dumps(sid) for sid in calls[:2])
    config.write_text(
        "[dictionaries.calls]\n"
        f"values = [{values}]\n"
        "\n[parameters]\n"
        '"path.CallSid" = { dictionary = "calls", probability = 0.8 }\n'
        '"query.Wait" = 0\n'
    )
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"),
        f"{server.url}/openapi.json",
        *("--auth", f"{ACCOUNT_SID}:{AUTH_TOKEN}"),
        *("--checks", ",".join(CHECKS)),
        *("--phases", "examples,coverage,fuzzing"),
        *("--mode", "all"),
        *("--max-examples", str(MAX_EXAMPLES)),
        "--generation-deterministic",
        *("--workers", "2"),
        *("--request-timeout", "30"),
        "--no-color",
    ]
    started = time.monotonic()
    run = subprocess.run(
        command, capture_output=True, text=True, cwd=root, timeout=TIME_BUDGET, check=False
    )
    seconds = time.monotonic() - started
    output = run.stdout + run.stderr
    tested = re.search(r"Tested: (\d+)", output)
    cases = re.search(r"Test cases:\s+(\d+) generated", output)
    figures = (
        f"schemathesis: {tested.group(1) if tested else '?'} operations, "
        f"{cases.group(1) if cases else '?'} test cases, {seconds:.0f} s"
    )
    print(figures)
    assert run.returncode == 0, f"{figures}\n{output[-30000:]}"
    assert tested is not None and int(tested.group(1)) >= 8, output[-5000:]
