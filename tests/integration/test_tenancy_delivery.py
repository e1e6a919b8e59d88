"""Tenancy end to end: the events of one account's calls reach only that account's sinks.

Two accounts on one real server, each with a webhook sink subscribed to every Call Insights
type (made with twilio-python), each sink pointing at its own path of one real receiver.
Both accounts post simulated traffic; every request a path receives must be signed with its
own account's token and carry only its own account's calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]

from callstream.accounts import create_account
from callstream.model.catalogue import catalogue
from tests.integration.backends import with_services
from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server
from tests.integration.test_webhook_delivery import FAST, Receiver, wait_for
from tests.integration.traffic import post_traffic

COMPLETE = "com.twilio.voice.insights.call-summary.complete"


def _second_account(data_dir: Path) -> tuple[str, str]:
    account = with_services(
        data_dir, lambda services: create_account(services.accounts, friendly_name="other")
    )
    return account.sid, account.auth_token


def _subscribe_all(server: Server, sid: str, token: str, destination: str) -> None:
    client = Client(sid, token)
    client.events.base_url = server.url
    sink = client.events.v1.sinks.create(
        description="tenant",
        sink_type="webhook",
        sink_configuration={"destination": destination, "method": "POST", "batch_events": True},
    )
    types = [t.type for t in catalogue().types if t.type.startswith("com.twilio.voice.insights")]
    assert len(types) == 7
    client.events.v1.subscriptions.create(
        description="everything", sink_sid=sink.sid, types=[{"type": t} for t in types]
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def test_each_account_receives_only_its_own_calls(tmp_path: Path, receiver: Receiver) -> None:
    data_dir = tmp_path / "data"
    other_sid, other_token = _second_account(data_dir)
    server = Server(data_dir, extra_env={**FAST, "CALLSTREAM_COMPLETE_AFTER": "2s"}).start()
    try:
        _subscribe_all(server, ACCOUNT_SID, AUTH_TOKEN, receiver.url("/mine"))
        _subscribe_all(server, other_sid, other_token, receiver.url("/theirs"))
        mine = set(post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=3, seed=21))
        theirs = set(post_traffic(server, other_sid, other_token, calls=3, seed=22))
        assert mine.isdisjoint(theirs)

        def completed(path: str) -> set[str]:
            return {
                e["data"]["call_sid"]
                for r in receiver.snapshot()
                if f"/{path}?" in r.url
                for e in r.events
                if e["type"] == COMPLETE
            }

        wait_for(lambda: completed("mine") == mine, 90, "my complete summaries")
        wait_for(lambda: completed("theirs") == theirs, 90, "their complete summaries")
        tokens = {"mine": AUTH_TOKEN, "theirs": other_token}
        calls = {"mine": mine, "theirs": theirs}
        for request in receiver.snapshot():
            path = "mine" if "/mine?" in request.url else "theirs"
            validator = RequestValidator(tokens[path])
            assert validator.validate(request.url, request.body, request.signature)
            seen = {e["data"]["call_sid"] for e in request.events}
            assert seen <= calls[path], f"{path} received another account's calls"
    finally:
        server.stop()
