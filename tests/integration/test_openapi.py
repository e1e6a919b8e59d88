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
would spend the time budget doing nothing. The console's event stream never ends by itself,
so its requests ask it to end after one read (``Timeout`` is fixed at 0); what ``Timeout``
does, and the JSON of the stream's messages, are checked directly below.
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
import jsonschema
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
        "/callstream/v1/Account",
        "/callstream/v1/ActiveCalls",
        "/callstream/v1/Events/Stream",
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
        '"query.Timeout" = 0\n'
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
        # One worker thread: with two, schemathesis' hypothesis internals hit CPython 3.11.7's
        # spurious "AST constructor recursion depth mismatch" SystemError (gh-106905) here.
        *("--workers", "1"),
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


def _sse_messages(body: str) -> list[dict[str, str]]:
    """The body's messages as field -> value (comments dropped, one line per field)."""
    messages = []
    for block in body.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if fields:
            messages.append(fields)
    return messages


def test_the_event_stream_ends_when_asked_and_sends_the_documented_messages(
    running: tuple[Server, list[str], Path],
) -> None:
    server, _, _ = running
    document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    message_schema = jsonschema.Draft202012Validator(
        {
            "$ref": "#/components/schemas/console.stream_message",
            "components": document["components"],
        },
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    with server.client() as http:
        # Timeout=0 from the log's start: the events already there, then the end.
        whole = http.get("/callstream/v1/Events/Stream", params={"After": 0, "Timeout": 0})
        assert whole.status_code == 200
        assert whole.headers["content-type"].startswith("text/event-stream")
        messages = _sse_messages(whole.text)
        assert messages[0] == {"retry": "2000", "id": "0"}
        events = [m for m in messages if m.get("event") == "events"]
        assert events, whole.text[:2000]
        for message in events:
            data = json.loads(message["data"])
            message_schema.validate(data)
            assert message["id"] == str(data["next_after"])
        assert sum(sum(json.loads(m["data"])["counts"].values()) for m in events) > 0

        # Timeout=1 at the log's end (nothing new): the stream stays open about a second.
        started = time.monotonic()
        quiet = http.get("/callstream/v1/Events/Stream", params={"Timeout": 1})
        seconds = time.monotonic() - started
        assert quiet.status_code == 200
        assert 1.0 <= seconds < 10, seconds
        assert [m for m in _sse_messages(quiet.text) if "event" in m] == []

        for bad in ("-1", "86401", "1.5", "soon", "\u00b2"):
            refused = http.get("/callstream/v1/Events/Stream", params={"Timeout": bad})
            assert refused.status_code == 400, (bad, refused.text)
            assert refused.json()["code"] == 20001
            assert "Timeout" in refused.json()["message"]


def test_the_console_endpoints_answer_their_documented_shapes(
    running: tuple[Server, list[str], Path],
) -> None:
    """Account and ActiveCalls against their component schemas, and a PageSize of a digit
    int() refuses ("²", which isdigit() admits) is a 400 like any other bad value."""
    server, _, _ = running
    document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()

    def validator(name: str) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(
            {"$ref": f"#/components/schemas/{name}", "components": document["components"]},
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )

    with server.client() as http:
        account = http.get("/callstream/v1/Account")
        assert account.status_code == 200
        validator("console.account").validate(account.json())
        assert account.json()["account_sid"] == ACCOUNT_SID
        active = http.get("/callstream/v1/ActiveCalls", params={"PageSize": 200})
        assert active.status_code == 200
        validator("console.active_calls").validate(active.json())
        for bad in ("0", "201", "\u00b2", "x"):
            refused = http.get("/callstream/v1/ActiveCalls", params={"PageSize": bad})
            assert refused.status_code == 400, (bad, refused.text)
            assert refused.json()["code"] == 20001
    assert httpx.get(f"{server.url}/callstream/v1/Account", timeout=10).status_code == 401
