"""The Event Streams v1 API through the official twilio-python client, against a real server.

Every call goes through ``twilio.rest.Client`` pointed at the server with
``client.events.base_url`` (event-streams-api.md §5.3), except what twilio-python cannot
express (a wrong method, a missing credential, an unauthenticated raw schema download),
which goes through httpx. A test id lives only in the test event on the sink's outbox, so
tests read it the way the delivery worker will: through the control store opened on the
server's data directory.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import msgspec
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from callstream.accounts import create_account
from callstream.api.openapi_event_streams import COMPONENTS, PATHS
from callstream.model.catalogue import catalogue
from callstream.model.insights import TestEvent
from callstream.schemas import load_schema
from callstream.server import Services
from callstream.store.control import OutboxItem, RoutingTable
from tests.integration.backends import StoreProxy, with_services
from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server

WEBHOOK = {"destination": "https://example.com/events", "method": "POST", "batch_events": True}
KINESIS = {
    "arn": "arn:aws:kinesis:us-east-1:111111111:stream/test",
    "role_arn": "arn:aws:iam::111111111:role/Role",
    "external_id": "1234567890",
}
SEGMENT = {"write_key": "MY_WRITEKEY"}
SUMMARY = "com.twilio.voice.insights.call-summary.complete"
GATEWAY_EVENT = "com.twilio.voice.insights.call-event.gateway"
SDK_METRICS = "com.twilio.voice.insights.call-metrics.sdk"
TEST_EVENT = "com.twilio.eventstreams.test-event"
TWILIO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
# Accounts besides the default one: a second tenant, and three for the 100-sink pages.
EXTRA_ACCOUNTS = ("tenant", "pages1", "pages2", "pages3")


@dataclass
class Env:
    server: Server
    tokens: dict[str, tuple[str, str]]
    control: Any  # the control store, through StoreProxy (either backend)

    def client(self, name: str = "default") -> Client:
        sid, token = self.tokens[name]
        client = Client(sid, token)
        client.events.base_url = self.server.url
        return client

    def outbox(self, sink_sid: str) -> list[OutboxItem]:
        return list(asyncio.run(self.control.read_outbox(0, 1000, sink_sid=sink_sid)))

    def routing(self, account: str = "default") -> RoutingTable:
        return asyncio.run(self.control.routing_table(self.tokens[account][0]))


def _create_accounts(data_dir: Path) -> dict[str, tuple[str, str]]:
    """Accounts made through callstream's own account code before the server starts."""

    async def make(services: Services) -> dict[str, tuple[str, str]]:
        made = {}
        for name in EXTRA_ACCOUNTS:
            account = await create_account(services.accounts, friendly_name=name)
            made[name] = (account.sid, account.auth_token)
        return made

    return with_services(data_dir, make)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    data_dir = tmp_path_factory.mktemp("event-streams") / "data"
    tokens = {"default": (ACCOUNT_SID, AUTH_TOKEN), **_create_accounts(data_dir)}
    server = Server(data_dir).start()
    try:
        yield Env(server, tokens, StoreProxy(data_dir, lambda s: s.control))
    finally:
        server.stop()


def _error(call: Any, *args: Any, **kwargs: Any) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as caught:
        call(*args, **kwargs)
    return caught.value


def _list_error(call: Any) -> tuple[int, int]:
    """twilio-python's pages accept only a 200 and raise a plain TwilioException holding the
    response, not a TwilioRestException (event-streams-api.md §1.5): (status, code) from it."""
    with pytest.raises(TwilioException) as caught:
        call()
    assert not isinstance(caught.value, TwilioRestException)
    response = caught.value.args[1]
    return response.status_code, json.loads(response.text)["code"]


def _webhook(client: Client, description: str = "hook") -> Any:
    return client.events.v1.sinks.create(
        description=description, sink_configuration=WEBHOOK, sink_type="webhook"
    )


# -- sinks ----------------------------------------------------------------------------------------


def test_webhook_sink_create_fetch_list_update_delete(env: Env) -> None:
    client = env.client()
    sink = client.events.v1.sinks.create(
        description="My webhook",
        sink_configuration={**WEBHOOK, "method": "get"},
        sink_type="webhook",
    )
    assert re.fullmatch(r"DG[0-9a-f]{32}", sink.sid)
    assert sink.status == "active" and sink.sink_type == "webhook"
    assert sink.sink_configuration == {**WEBHOOK, "method": "GET"}
    assert isinstance(sink.date_created, datetime)  # twilio-python parsed YYYY-MM-DDTHH:MM:SSZ
    url = f"{env.server.url}/v1/Sinks/{sink.sid}"
    assert sink.url == url
    assert sink.links == {"sink_test": f"{url}/Test", "sink_validate": f"{url}/Validate"}

    with env.server.client() as http:
        raw = http.get(f"/v1/Sinks/{sink.sid}").json()
    assert TWILIO_TIME.match(raw["date_created"]) and TWILIO_TIME.match(raw["date_updated"])
    assert set(raw) == {
        "date_created",
        "date_updated",
        "description",
        "sid",
        "sink_configuration",
        "sink_type",
        "status",
        "url",
        "links",
    }

    fetched = client.events.v1.sinks(sink.sid).fetch()
    assert (fetched.sid, fetched.description, fetched.status) == (sink.sid, "My webhook", "active")
    assert sink.sid in {s.sid for s in client.events.v1.sinks.list()}

    updated = client.events.v1.sinks(sink.sid).update(description="Renamed")
    assert (
        updated.description == "Renamed"
        and updated.sink_configuration == fetched.sink_configuration
    )
    assert updated.date_updated >= fetched.date_updated

    assert client.events.v1.sinks(sink.sid).delete() is True
    gone = _error(client.events.v1.sinks(sink.sid).fetch)
    assert (gone.status, gone.code) == (404, 91001)
    for call in (
        lambda: client.events.v1.sinks(sink.sid).update(description="x"),
        client.events.v1.sinks(sink.sid).delete,
        client.events.v1.sinks(sink.sid).sink_test.create,
    ):
        error = _error(call)
        assert (error.status, error.code) == (404, 91001)


def test_segment_sink_is_active_and_kinesis_starts_initialized(env: Env) -> None:
    client = env.client()
    segment = client.events.v1.sinks.create(
        description="seg", sink_configuration=SEGMENT, sink_type="segment"
    )
    kinesis = client.events.v1.sinks.create(
        description="kin", sink_configuration=KINESIS, sink_type="kinesis"
    )
    assert (segment.status, segment.sink_configuration) == ("active", SEGMENT)
    assert (kinesis.status, kinesis.sink_configuration) == ("initialized", KINESIS)
    initialized = {s.sid for s in client.events.v1.sinks.list(status="initialized")}
    assert kinesis.sid in initialized and segment.sid not in initialized


@pytest.mark.parametrize(
    ("sink_type", "configuration", "field"),
    [
        ("webhook", {"method": "POST", "batch_events": True}, "destination"),
        ("webhook", {**WEBHOOK, "destination": "/relative/path"}, "destination"),
        ("webhook", {**WEBHOOK, "destination": "ftp://example.com/x"}, "destination"),
        ("webhook", {**WEBHOOK, "destination": "http://127.0.0.1:9/hook"}, "destination"),
        ("webhook", {**WEBHOOK, "method": "PUT"}, "method"),
        ("webhook", {"destination": "https://example.com/x", "batch_events": True}, "method"),
        ("webhook", {"destination": "https://example.com/x", "method": "POST"}, "batch_events"),
        ("webhook", {**WEBHOOK, "batch_events": "yes"}, "batch_events"),
        ("kinesis", {**KINESIS, "arn": ""}, "arn"),
        ("kinesis", {**KINESIS, "role_arn": "arn:aws:kinesis:us-east-1:1:stream/x"}, "role_arn"),
        ("kinesis", {"arn": KINESIS["arn"], "role_arn": KINESIS["role_arn"]}, "external_id"),
        ("kinesis", {**KINESIS, "external_id": "x"}, "external_id"),
        ("kinesis", {**KINESIS, "external_id": "has space"}, "external_id"),
        ("segment", {}, "write_key"),
        ("segment", {"write_key": 42}, "write_key"),
    ],
)
def test_bad_sink_configuration_is_91000_naming_the_field(
    env: Env, sink_type: str, configuration: dict[str, Any], field: str
) -> None:
    error = _error(
        env.client().events.v1.sinks.create,
        description="bad",
        sink_configuration=configuration,
        sink_type=sink_type,
    )
    assert (error.status, error.code) == (400, 91000)
    assert f"Sink Configuration {field} " in error.msg
    assert error.details == {"parameter": "SinkConfiguration", "field": field}


@pytest.mark.parametrize(
    ("description", "sink_type", "configuration", "named"),
    [
        ("d", "webhook", "{not json", "SinkConfiguration"),
        ("d", "webhook", "[1, 2]", "SinkConfiguration"),
        ("d", "email", "{}", "SinkType"),
        ("", "segment", '{"write_key": "k"}', "Description"),
    ],
)
def test_bad_sink_parameters_are_91000_naming_the_parameter(
    env: Env, description: str, sink_type: str, configuration: str, named: str
) -> None:
    error = _error(
        env.client().events.v1.sinks.create,
        description=description,
        sink_configuration=configuration,  # a str passes through twilio-python unchanged
        sink_type=sink_type,
    )
    assert (error.status, error.code) == (400, 91000)
    assert named in error.msg and error.details["parameter"] == named


def test_sink_list_rejects_unknown_filters(env: Env) -> None:
    with env.server.client() as http:
        for query in ({"Status": "sleeping"}, {"InUse": "maybe"}):
            answer = http.get("/v1/Sinks", params=query)
            assert answer.status_code == 400 and answer.json()["code"] == 20001
            assert next(iter(query)) in answer.json()["message"]


# -- sink test and validate -------------------------------------------------------------------


def _test_ids(env: Env, sink_sid: str) -> list[str]:
    ids = []
    for item in env.outbox(sink_sid):
        assert (item.type, item.schema_version, item.sink_sid) == (TEST_EVENT, 1, sink_sid)
        event = msgspec.msgpack.decode(item.body, type=TestEvent)
        assert event.sink_sid == sink_sid and event.account_sid == item.account_sid
        ids.append(event.test_id)
    return ids


def test_kinesis_sink_goes_initialized_validating_active(env: Env) -> None:
    client = env.client()
    sink = client.events.v1.sinks.create(
        description="kinesis", sink_configuration=KINESIS, sink_type="kinesis"
    )
    context = client.events.v1.sinks(sink.sid)

    untested = _error(context.sink_validate.create, test_id=str(uuid.uuid4()))
    assert (untested.status, untested.code) == (400, 20001)
    assert "no test" in untested.msg and "/Test" in untested.msg

    assert context.sink_test.create().result == "submitted"
    assert context.fetch().status == "validating"
    (first,) = _test_ids(env, sink.sid)
    assert str(uuid.UUID(first)) == first

    # Not active yet, so it cannot be subscribed.
    refused = _error(
        client.events.v1.subscriptions.create,
        description="too early",
        sink_sid=sink.sid,
        types=[{"type": SUMMARY}],
    )
    assert (refused.status, refused.code) == (400, 91100)

    wrong = _error(context.sink_validate.create, test_id=str(uuid.uuid4()))
    assert (wrong.status, wrong.code) == (400, 20001) and "latest test" in wrong.msg
    assert context.fetch().status == "validating"

    assert context.sink_test.create().result == "submitted"
    stale, latest = _test_ids(env, sink.sid)
    assert stale == first and latest != first
    assert _error(context.sink_validate.create, test_id=stale).status == 400

    assert context.sink_validate.create(test_id=latest).result == "valid"
    assert context.fetch().status == "active"
    # Validating again (a retried request) is still valid; testing again keeps it active.
    assert context.sink_validate.create(test_id=latest.upper()).result == "valid"
    context.sink_test.create()
    assert context.fetch().status == "active"

    missing = _error(context.sink_validate.create, test_id="")
    assert (missing.status, missing.code) == (400, 20001) and "TestId" in missing.msg


def test_webhook_sink_test_queues_an_event_and_stays_active(env: Env) -> None:
    client = env.client()
    sink = _webhook(client)
    assert env.outbox(sink.sid) == []
    assert client.events.v1.sinks(sink.sid).sink_test.create().result == "submitted"
    (test_id,) = _test_ids(env, sink.sid)
    assert client.events.v1.sinks(sink.sid).fetch().status == "active"
    assert client.events.v1.sinks(sink.sid).sink_validate.create(test_id=test_id).result == "valid"
    # Deleting the sink drops what it had queued.
    client.events.v1.sinks(sink.sid).delete()
    assert env.outbox(sink.sid) == []


# -- subscriptions --------------------------------------------------------------------------------


def test_subscription_lifecycle_and_routing_table(env: Env) -> None:
    client = env.client()
    sink = _webhook(client, "subscribed")
    version_before = asyncio.run(env.control.control_version(ACCOUNT_SID))
    subscription = client.events.v1.subscriptions.create(
        description="summaries and gateway events",
        sink_sid=sink.sid,
        types=[{"type": SUMMARY, "schema_version": 1}, {"type": GATEWAY_EVENT}],
    )
    assert re.fullmatch(r"DF[0-9a-f]{32}", subscription.sid)
    assert (subscription.account_sid, subscription.sink_sid) == (ACCOUNT_SID, sink.sid)
    url = f"{env.server.url}/v1/Subscriptions/{subscription.sid}"
    assert subscription.url == url
    assert subscription.links == {"subscribed_events": f"{url}/SubscribedEvents"}

    latest = catalogue().schema_of(GATEWAY_EVENT).latest_version
    route = next(r for r in env.routing().routes if r.subscription_sid == subscription.sid)
    assert route.sink.sid == sink.sid and route.types == {SUMMARY: 1, GATEWAY_EVENT: latest}
    assert asyncio.run(env.control.control_version(ACCOUNT_SID)) > version_before
    # A failed sink keeps routing: its queue keeps every event until it recovers (decision 0010).
    asyncio.run(env.control.set_sink_status(ACCOUNT_SID, sink.sid, "failed", time.time()))
    assert client.events.v1.sinks(sink.sid).fetch().status == "failed"
    assert any(r.sink.sid == sink.sid for r in env.routing().routes)
    asyncio.run(env.control.set_sink_status(ACCOUNT_SID, sink.sid, "active", time.time()))
    assert any(r.sink.sid == sink.sid for r in env.routing().routes)

    fetched = client.events.v1.subscriptions(subscription.sid).fetch()
    assert fetched.description == "summaries and gateway events"
    by_sink = client.events.v1.subscriptions.list(sink_sid=sink.sid)
    assert [s.sid for s in by_sink] == [subscription.sid]
    updated = client.events.v1.subscriptions(subscription.sid).update(description="renamed")
    assert updated.description == "renamed" and updated.sink_sid == sink.sid
    in_use = {s.sid for s in client.events.v1.sinks.list(in_use=True)}
    assert sink.sid in in_use
    assert sink.sid not in {s.sid for s in client.events.v1.sinks.list(in_use=False)}

    # One subscription per sink (docs/decisions/0005-subscriptions-per-sink.md).
    second = _error(
        client.events.v1.subscriptions.create,
        description="again",
        sink_sid=sink.sid,
        types=[{"type": SDK_METRICS}],
    )
    assert (second.status, second.code) == (400, 91100) and subscription.sid in second.msg
    # A sink in use cannot be deleted from under its subscription.
    in_use_error = _error(client.events.v1.sinks(sink.sid).delete)
    assert in_use_error.status == 400 and subscription.sid in in_use_error.msg

    assert client.events.v1.subscriptions(subscription.sid).delete() is True
    missing = _error(client.events.v1.subscriptions(subscription.sid).fetch)
    assert (missing.status, missing.code) == (404, 91102)
    assert all(r.subscription_sid != subscription.sid for r in env.routing().routes)
    # The sink stays, active and no longer in use.
    assert client.events.v1.sinks(sink.sid).fetch().status == "active"
    assert sink.sid in {s.sid for s in client.events.v1.sinks.list(in_use=False)}


def test_subscribed_events(env: Env) -> None:
    client = env.client()
    sink = _webhook(client)
    subscription = client.events.v1.subscriptions.create(
        description="types", sink_sid=sink.sid, types=[{"type": SUMMARY, "schema_version": 1}]
    )
    events = client.events.v1.subscriptions(subscription.sid).subscribed_events

    added = events.create(type=GATEWAY_EVENT, schema_version=2)
    assert (added.type, added.schema_version, added.subscription_sid) == (
        GATEWAY_EVENT,
        2,
        subscription.sid,
    )
    assert added.account_sid == ACCOUNT_SID
    assert added.url == (
        f"{env.server.url}/v1/Subscriptions/{subscription.sid}/SubscribedEvents/{GATEWAY_EVENT}"
    )
    latest = events.create(type=SDK_METRICS)
    assert latest.schema_version == catalogue().schema_of(SDK_METRICS).latest_version
    listed = {(e.type, e.schema_version) for e in events.list(page_size=2)}
    assert listed == {(SUMMARY, 1), (GATEWAY_EVENT, 2), (SDK_METRICS, latest.schema_version)}

    assert events(SUMMARY).fetch().schema_version == 1
    assert events(SUMMARY).update(schema_version=2).schema_version == 2
    assert events(SUMMARY).update().schema_version == catalogue().schema_of(SUMMARY).latest_version
    assert events(SUMMARY).fetch().schema_version == catalogue().schema_of(SUMMARY).latest_version
    route = next(r for r in env.routing().routes if r.subscription_sid == subscription.sid)
    assert route.types[GATEWAY_EVENT] == 2 and SDK_METRICS in route.types

    duplicate = _error(events.create, type=GATEWAY_EVENT)
    assert (duplicate.status, duplicate.code) == (400, 91101)
    unknown = _error(events.create, type="com.example.nothing")
    assert (unknown.status, unknown.code) == (400, 91104)
    assert unknown.details == {"parameter": "Type", "type": "com.example.nothing"}
    bad_version = _error(events(GATEWAY_EVENT).update, schema_version=9)
    assert (bad_version.status, bad_version.code) == (400, 20001)
    assert "Schema version 9" in bad_version.msg
    assert bad_version.details["parameter"] == "SchemaVersion"
    assert bad_version.details["available_versions"] == list(
        catalogue().schema_of(GATEWAY_EVENT).versions
    )

    assert events(GATEWAY_EVENT).delete() is True
    not_subscribed = _error(events(GATEWAY_EVENT).fetch)
    assert (not_subscribed.status, not_subscribed.code) == (404, 20404)
    assert _error(events(GATEWAY_EVENT).delete).status == 404
    assert _error(events(GATEWAY_EVENT).update, schema_version=1).status == 404

    nowhere = client.events.v1.subscriptions("DF" + "0" * 32).subscribed_events
    assert _list_error(nowhere.list) == (404, 91102)
    for call in (lambda: nowhere.create(type=SUMMARY), nowhere(SUMMARY).fetch):
        error = _error(call)
        assert (error.status, error.code) == (404, 91102)


@pytest.mark.parametrize(
    ("description", "types", "code", "text"),
    [
        ("", [{"type": SUMMARY}], 91101, "Description is empty"),
        ("d", [{"type": SUMMARY}, {"type": SUMMARY, "schema_version": 1}], 91101, "duplicated"),
        ("d", [{"type": "com.twilio.nothing"}], 91104, "not found"),
        ("d", [{"type": SUMMARY, "schema_version": 7}], 20001, "Schema version 7"),
        ("d", [{"schema_version": 1}], 20001, "Types[0]"),
        ("d", [], 20001, "Types"),
    ],
)
def test_bad_subscription_parameters(
    env: Env, description: str, types: list[dict[str, Any]], code: int, text: str
) -> None:
    sink_sid = _webhook(env.client()).sid
    error = _error(
        env.client().events.v1.subscriptions.create,
        description=description,
        sink_sid=sink_sid,
        types=types,
    )
    assert (error.status, error.code) == (400, code) and text in error.msg
    assert list(env.client().events.v1.subscriptions.list(sink_sid=sink_sid)) == []


def test_subscription_to_an_unknown_sink_is_91001(env: Env) -> None:
    error = _error(
        env.client().events.v1.subscriptions.create,
        description="d",
        sink_sid="DG" + "0" * 32,
        types=[{"type": SUMMARY}],
    )
    assert (error.status, error.code) == (400, 91001)


# -- types and schemas ----------------------------------------------------------------------------


def test_event_types_and_schemas(env: Env) -> None:
    client = env.client()
    types = client.events.v1.event_types.list(page_size=3)
    assert sorted(t.type for t in types) == sorted(t.type for t in catalogue().types)
    summaries = client.events.v1.event_types.list(schema_id="VoiceInsights.CallSummary")
    assert {t.type for t in summaries} == {
        t.type for t in catalogue().types if t.schema_id == "VoiceInsights.CallSummary"
    }

    fetched = client.events.v1.event_types(SUMMARY).fetch()
    assert (fetched.type, fetched.schema_id, fetched.status) == (
        SUMMARY,
        "VoiceInsights.CallSummary",
        "available",
    )
    assert fetched.url == f"{env.server.url}/v1/Types/{SUMMARY}"
    assert fetched.links == {
        "schema": f"{env.server.url}/v1/Schemas/VoiceInsights.CallSummary/Versions"
    }
    assert isinstance(fetched.date_created, datetime)
    unknown = _error(client.events.v1.event_types("com.example.none").fetch)
    assert (unknown.status, unknown.code) == (404, 20404)

    schema = client.events.v1.schemas("VoiceInsights.CallEvent").fetch()
    expected = catalogue().schema("VoiceInsights.CallEvent")
    assert (schema.id, schema.latest_version) == (expected.id, expected.latest_version)
    versions = schema.versions.list(page_size=1)
    assert [v.schema_version for v in versions] == list(expected.versions)
    version = client.events.v1.schemas("VoiceInsights.CallEvent").versions(2).fetch()
    assert version.schema_version == 2 and version.id == "VoiceInsights.CallEvent"
    assert version.raw == f"{env.server.url}/schemas/VoiceInsights.CallEvent/2"

    # The raw document is public: no credentials.
    for raw in (version.raw, version.raw + ".json"):
        document = httpx.get(raw)
        assert document.status_code == 200
        assert document.json() == load_schema("VoiceInsights.CallEvent", 2)
    assert httpx.get(f"{env.server.url}/schemas/VoiceInsights.CallEvent/9").status_code == 404

    for call in (
        client.events.v1.schemas("Nope.Nothing").fetch,
        client.events.v1.schemas("VoiceInsights.CallEvent").versions(9).fetch,
    ):
        error = _error(call)
        assert (error.status, error.code) == (404, 20404)


# -- pagination, limits, tenancy ------------------------------------------------------------------


def test_paging_returns_each_record_once_and_the_sink_limit_holds(env: Env) -> None:
    created: dict[str, list[str]] = {}
    for name in ("pages1", "pages2", "pages3"):
        client = env.client(name)
        created[name] = [
            client.events.v1.sinks.create(
                description=f"{name} {i}", sink_configuration=SEGMENT, sink_type="segment"
            ).sid
            for i in range(100)
        ]
        limit = _error(
            client.events.v1.sinks.create,
            description="one too many",
            sink_configuration=SEGMENT,
            sink_type="segment",
        )
        assert (limit.status, limit.code) == (400, 91003)

    for name, sids in created.items():
        listed = [s.sid for s in env.client(name).events.v1.sinks.list(page_size=7)]
        assert listed == sids  # each once, in creation order, only the account's own
    assert len({sid for sids in created.values() for sid in sids}) == 300

    # Filters and page tokens travel together through next_page_url.
    client = env.client("pages1")
    chosen = created["pages1"][3:73:3]
    for sid in chosen:
        client.events.v1.subscriptions.create(
            description="paged", sink_sid=sid, types=[{"type": SUMMARY}]
        )
    in_use = [s.sid for s in client.events.v1.sinks.list(in_use=True, page_size=7)]
    assert in_use == chosen
    not_in_use = client.events.v1.sinks.list(in_use=False, status="active", page_size=7)
    assert len(not_in_use) == 100 - len(chosen)
    subscriptions = [s.sink_sid for s in client.events.v1.subscriptions.list(page_size=7)]
    assert subscriptions == chosen


def test_page_meta_urls_are_absolute_and_walk_both_ways(env: Env) -> None:
    client = env.client()
    for i in range(11):
        client.events.v1.sinks.create(
            description=f"meta {i}", sink_configuration=SEGMENT, sink_type="segment"
        )
    first = client.events.v1.sinks.page(page_size=5)
    assert first.previous_page_url is None
    assert first.next_page_url.startswith(f"{env.server.url}/v1/Sinks?")
    second = first.next_page()
    assert second is not None and second.previous_page_url.startswith(env.server.url)
    back = second.previous_page()
    assert back is not None
    first_sids = [s.sid for s in first]
    assert len(first_sids) == 5 and [s.sid for s in back] == first_sids
    assert not set(first_sids) & {s.sid for s in second}

    with env.server.client() as http:
        meta = http.get("/v1/Sinks", params={"PageSize": 5}).json()["meta"]
        assert (meta["key"], meta["page"], meta["page_size"]) == ("sinks", 0, 5)
        assert meta["first_page_url"].startswith(f"{env.server.url}/v1/Sinks?")
        following = httpx.get(meta["next_page_url"], auth=env.tokens["default"]).json()["meta"]
        assert following["page"] == 1 and following["url"] == meta["next_page_url"]
    with env.server.client() as http:
        bad = http.get("/v1/Sinks", params={"PageToken": "garbage"})
        assert bad.status_code == 400 and "PageToken" in bad.json()["message"]
        too_big = http.get("/v1/Sinks", params={"PageSize": 5000})
        assert too_big.status_code == 400 and "PageSize" in too_big.json()["message"]
        # A token from another list is refused, not misread.
        types_token = http.get("/v1/Types", params={"PageSize": 1}).json()["meta"]
        token = re.search(r"PageToken=([^&]+)", types_token["next_page_url"])
        assert token is not None
        crossed = http.get("/v1/Sinks", params={"PageToken": token.group(1)})
        assert crossed.status_code == 400


def test_accounts_cannot_see_or_touch_each_others_resources(env: Env) -> None:
    owner, other = env.client(), env.client("tenant")
    sink = _webhook(owner, "private")
    subscription = owner.events.v1.subscriptions.create(
        description="private", sink_sid=sink.sid, types=[{"type": SUMMARY}]
    )
    theirs = other.events.v1

    for call in (
        theirs.sinks(sink.sid).fetch,
        lambda: theirs.sinks(sink.sid).update(description="mine now"),
        theirs.sinks(sink.sid).delete,
        theirs.sinks(sink.sid).sink_test.create,
        lambda: theirs.sinks(sink.sid).sink_validate.create(test_id=str(uuid.uuid4())),
    ):
        error = _error(call)
        assert (error.status, error.code) == (404, 91001)
    for call in (
        theirs.subscriptions(subscription.sid).fetch,
        lambda: theirs.subscriptions(subscription.sid).update(description="mine now"),
        theirs.subscriptions(subscription.sid).delete,
        lambda: theirs.subscriptions(subscription.sid).subscribed_events.create(type=SDK_METRICS),
        theirs.subscriptions(subscription.sid).subscribed_events(SUMMARY).fetch,
        theirs.subscriptions(subscription.sid).subscribed_events(SUMMARY).delete,
    ):
        error = _error(call)
        assert (error.status, error.code) == (404, 91102)
    assert _list_error(theirs.subscriptions(subscription.sid).subscribed_events.list) == (
        404,
        91102,
    )
    borrowed = _error(
        theirs.subscriptions.create,
        description="borrowed",
        sink_sid=sink.sid,
        types=[{"type": SUMMARY}],
    )
    assert (borrowed.status, borrowed.code) == (400, 91001)
    assert sink.sid not in {s.sid for s in theirs.sinks.list()}
    assert subscription.sid not in {s.sid for s in theirs.subscriptions.list()}
    assert list(theirs.subscriptions.list(sink_sid=sink.sid)) == []
    assert env.outbox(sink.sid) == []

    # Nothing of the owner's changed.
    assert owner.events.v1.sinks(sink.sid).fetch().description == "private"
    assert owner.events.v1.subscriptions(subscription.sid).fetch().description == "private"
    assert [
        e.type for e in owner.events.v1.subscriptions(subscription.sid).subscribed_events.list()
    ] == [SUMMARY]


# -- protocol-level errors ------------------------------------------------------------------------


def test_authentication_method_and_body_size_errors(env: Env) -> None:
    wrong = Client(ACCOUNT_SID, "not-the-token-at-all")
    wrong.events.base_url = env.server.url
    error = _error(wrong.events.v1.sinks.create, "d", SEGMENT, "segment")
    assert (error.status, error.code) == (401, 20003)
    error = _error(wrong.events.v1.event_types(SUMMARY).fetch)
    assert (error.status, error.code) == (401, 20003)
    assert httpx.get(f"{env.server.url}/v1/Sinks").status_code == 401

    too_big = _error(
        env.client().events.v1.sinks.create,
        description="x" * (70 * 1024),
        sink_configuration=SEGMENT,
        sink_type="segment",
    )
    assert too_big.status == 413

    with env.server.client() as http:
        put = http.put("/v1/Sinks", data={"Description": "d"})
        assert put.status_code == 405 and put.json()["status"] == 405
        patch = http.patch(f"/v1/Types/{SUMMARY}")
        assert patch.status_code == 405
        # Parameters come from a form body only, as at Twilio: a JSON body names none.
        as_json = http.post(
            "/v1/Sinks",
            json={"Description": "d", "SinkType": "segment", "SinkConfiguration": "{}"},
        )
        assert as_json.status_code == 400
        assert as_json.json()["message"] == "Missing required parameter Description"


# -- the OpenAPI fragment describes what the server answers ---------------------------------------


def _conforms(path: str, method: str, answer: httpx.Response) -> None:
    """Validate ``answer`` against the fragment's schema for that operation and status."""
    operation = PATHS[path][method]
    assert str(answer.status_code) in operation["responses"], (path, method, answer.status_code)
    response = operation["responses"][str(answer.status_code)]
    if "$ref" in response:
        response = COMPONENTS["responses"][response["$ref"].rsplit("/", 1)[1]]
    if "content" not in response:
        assert answer.content == b""
        return
    schema = response["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator(
        {"components": COMPONENTS, **schema}, format_checker=jsonschema.FormatChecker()
    )
    validator.validate(answer.json())


def test_responses_match_the_openapi_fragment(env: Env) -> None:
    sink_path, subscription_path = "/v1/Sinks/{Sid}", "/v1/Subscriptions/{Sid}"
    events_path = "/v1/Subscriptions/{SubscriptionSid}/SubscribedEvents"
    with env.server.client() as http:
        created = http.post(
            "/v1/Sinks",
            data={
                "Description": "openapi",
                "SinkType": "kinesis",
                "SinkConfiguration": json.dumps(KINESIS),
            },
        )
        _conforms("/v1/Sinks", "post", created)
        sid = created.json()["sid"]
        _conforms(sink_path, "get", http.get(f"/v1/Sinks/{sid}"))
        _conforms(sink_path, "post", http.post(f"/v1/Sinks/{sid}", data={"Description": "x"}))
        _conforms("/v1/Sinks", "get", http.get("/v1/Sinks", params={"PageSize": 2}))
        _conforms("/v1/Sinks/{Sid}/Test", "post", http.post(f"/v1/Sinks/{sid}/Test"))
        (test_id,) = _test_ids(env, sid)
        validated = http.post(f"/v1/Sinks/{sid}/Validate", data={"TestId": test_id})
        _conforms("/v1/Sinks/{Sid}/Validate", "post", validated)
        active = http.get(f"/v1/Sinks/{sid}")
        assert active.json()["status"] == "active"
        _conforms(sink_path, "get", active)

        subscription = http.post(
            "/v1/Subscriptions",
            data={"Description": "d", "SinkSid": sid, "Types": json.dumps({"type": SUMMARY})},
        )
        _conforms("/v1/Subscriptions", "post", subscription)
        sub = subscription.json()["sid"]
        _conforms(subscription_path, "get", http.get(f"/v1/Subscriptions/{sub}"))
        renamed = http.post(f"/v1/Subscriptions/{sub}", data={"Description": "e"})
        _conforms(subscription_path, "post", renamed)
        _conforms("/v1/Subscriptions", "get", http.get("/v1/Subscriptions"))
        added = http.post(f"/v1/Subscriptions/{sub}/SubscribedEvents", data={"Type": SDK_METRICS})
        _conforms(events_path, "post", added)
        _conforms(events_path, "get", http.get(f"/v1/Subscriptions/{sub}/SubscribedEvents"))
        one = f"/v1/Subscriptions/{sub}/SubscribedEvents/{SDK_METRICS}"
        _conforms(events_path + "/{Type}", "get", http.get(one))
        _conforms(events_path + "/{Type}", "post", http.post(one, data={"SchemaVersion": "1"}))
        _conforms(events_path + "/{Type}", "delete", http.delete(one))
        _conforms(subscription_path, "delete", http.delete(f"/v1/Subscriptions/{sub}"))
        _conforms(sink_path, "delete", http.delete(f"/v1/Sinks/{sid}"))

        _conforms("/v1/Types", "get", http.get("/v1/Types"))
        _conforms("/v1/Types/{Type}", "get", http.get(f"/v1/Types/{SUMMARY}"))
        schema = "/v1/Schemas/VoiceInsights.CallSummary"
        _conforms("/v1/Schemas/{Id}", "get", http.get(schema))
        _conforms("/v1/Schemas/{Id}/Versions", "get", http.get(f"{schema}/Versions"))
        version = http.get(f"{schema}/Versions/1")
        _conforms("/v1/Schemas/{Id}/Versions/{SchemaVersion}", "get", version)
        _conforms("/schemas/{Id}/{Document}", "get", httpx.get(version.json()["raw"]))

        # Errors have the documented shape too.
        _conforms(sink_path, "get", http.get(f"/v1/Sinks/{sid}"))
        _conforms("/v1/Sinks", "post", http.post("/v1/Sinks", data={"Description": "d"}))
        _conforms("/v1/Sinks", "get", httpx.get(f"{env.server.url}/v1/Sinks"))
