"""The command line against a real data directory and a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callstream", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_accounts_and_api_keys_authenticate_against_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = run("accounts", "create", "--data-dir", str(data), "--json")
    assert created.returncode == 0, created.stderr
    account = json.loads(created.stdout)
    assert account["account_sid"].startswith("AC") and len(account["auth_token"]) == 32
    key_out = run(
        "accounts", "create-key", account["account_sid"], "--data-dir", str(data), "--json"
    )
    assert key_out.returncode == 0, key_out.stderr
    key = json.loads(key_out.stdout)
    listed = run("accounts", "list", "--data-dir", str(data), "--json")
    assert account["account_sid"] in {a["account_sid"] for a in json.loads(listed.stdout)}
    assert "auth_token" not in listed.stdout  # tokens only with --show-tokens

    bad = run("accounts", "create-key", "AC" + "0" * 32, "--data-dir", str(data))
    assert bad.returncode == 1 and "no account" in bad.stderr

    server = Server(data).start()
    try:
        record = {
            "kind": "gateway_event",
            "id": "r1",
            "call_sid": "CA" + "1" * 32,
            "timestamp": "2026-11-01T10:00:00Z",
            "edge": "sip_edge",
            "name": "ringing",
        }
        for user, password in [
            (account["account_sid"], account["auth_token"]),
            (key["sid"], key["secret"]),
        ]:
            with server.client(user, password) as client:
                assert client.post("/v1/Telemetry", json=[record]).status_code == 202
        with server.client(key["sid"], account["auth_token"]) as client:
            assert client.post("/v1/Telemetry", json=[record]).status_code == 401
    finally:
        server.stop()


def test_simulate_posts_and_tail_shows_the_events(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        env = {
            **os.environ,
            "CALLSTREAM_ACCOUNT_SID": ACCOUNT_SID,
            "CALLSTREAM_AUTH_TOKEN": AUTH_TOKEN,
        }
        posted = run("simulate", "--url", server.url, "--calls", "5", "--seed", "3", env=env)
        assert posted.returncode == 0, posted.stderr
        assert "accepted" in posted.stderr
        tailed = run(
            "tail",
            "--url",
            server.url,
            "--from-start",
            "--no-follow",
            "--json",
            "--type",
            "com.twilio.voice.insights.call-event.gateway",
            env=env,
        )
        assert tailed.returncode == 0, tailed.stderr
        events = [json.loads(line) for line in tailed.stdout.splitlines()]
        assert events and {e["type"] for e in events} == {
            "com.twilio.voice.insights.call-event.gateway"
        }
        refused = run(
            "simulate",
            "--url",
            server.url,
            "--calls",
            "1",
            env={**env, "CALLSTREAM_AUTH_TOKEN": "wrong-token-wrong"},
        )
        assert refused.returncode == 1 and "401" in refused.stderr
    finally:
        server.stop()
