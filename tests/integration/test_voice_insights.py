"""The Voice Insights v1 read API through twilio-python, against what the live feed produced.

One server with short summary timers takes simulated traffic for two accounts; once every
call has its complete summary, each call is read back through ``client.insights.v1`` and
compared with the CloudEvents the engine published on ``/callstream/v1/Events`` (the same
canonical events, rendered by the stream renderers). A second server, whose summaries never
complete, shows the partial state.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client

from callstream.accounts import create_account as new_account
from tests.integration.backends import with_services
from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server
from tests.integration.traffic import post_traffic

SUMMARY = "com.twilio.voice.insights.call-summary."
CALL_EVENT = "com.twilio.voice.insights.call-event."
CALL_METRICS = "com.twilio.voice.insights.call-metrics."
# The REST summary is the CallSummary/2 data less these stream-only members ...
STREAM_ONLY = {"parent_call_sid", "parent_account_sid", "processing_version"}
# ... plus these REST-only ones.
REST_ONLY = {"answered_by", "url", "annotation"}
SUMMARY_KEYS = (
    *("account_sid", "call_sid", "call_type", "call_state", "processing_state"),
    *("created_time", "start_time", "end_time", "duration", "connect_duration", "from", "to"),
    *("carrier_edge", "client_edge", "sdk_edge", "sip_edge", "tags", "url", "attributes"),
    *("properties", "trust", "annotation"),
)
SUMMARY_ATTRS = {"from": "_from"}

# --- traffic and the feed ------------------------------------------------------------------------


@dataclass
class Feed:
    """An account's CloudEvents ``data``, per call and kind, in feed order."""

    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    summaries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def complete(self, call_sid: str) -> dict[str, Any] | None:
        done = [s for s in self.summaries.get(call_sid, []) if s["processing_state"] == "complete"]
        return done[-1] if done else None


def read_feed(server: Server, username: str, password: str) -> Feed:
    feed = Feed()
    after = 0
    with server.client(username, password) as client:
        while True:
            response = client.get("/callstream/v1/Events", params={"After": after, "Limit": 1000})
            assert response.status_code == 200, response.text
            body = response.json()
            for event in body["events"]:
                data = event["data"]
                kind = event["type"]
                if kind.startswith(SUMMARY):
                    feed.summaries.setdefault(data["call_sid"], []).append(data)
                elif kind.startswith(CALL_EVENT):
                    feed.events.setdefault(data["call_sid"], []).append(data)
                elif kind.startswith(CALL_METRICS):
                    feed.metrics.setdefault(data["call_sid"], []).append(data)
            if body["next_after"] == after:
                return feed
            after = body["next_after"]


def wait_for_feed(
    server: Server, username: str, password: str, done: Callable[[Feed], bool], timeout: float
) -> Feed:
    deadline = time.monotonic() + timeout
    while True:
        feed = read_feed(server, username, password)
        if done(feed):
            return feed
        assert time.monotonic() < deadline, "the engine did not get there in time"
        time.sleep(0.2)  # polling interval while waiting on a condition with a deadline


def create_account(data_dir: Path) -> tuple[str, str]:
    # Through callstream's account code on the data dir's stores (either backend).
    account = with_services(data_dir, lambda services: new_account(services.accounts))
    return account.sid, account.auth_token


@dataclass
class Traffic:
    server: Server
    calls: list[str]
    feed: Feed
    other: tuple[str, str]
    other_calls: list[str]
    other_feed: Feed


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    root = tmp_path_factory.mktemp("voice-insights")
    other = create_account(root / "data")
    server = Server(
        root / "data",
        extra_env={"CALLSTREAM_PARTIAL_AFTER": "1s", "CALLSTREAM_COMPLETE_AFTER": "3s"},
    ).start()
    try:
        calls = post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=24, seed=11)
        other_calls = post_traffic(server, *other, calls=3, seed=12)

        def all_complete(calls: list[str]) -> Callable[[Feed], bool]:
            return lambda feed: all(feed.complete(sid) is not None for sid in calls)

        feed = wait_for_feed(server, ACCOUNT_SID, AUTH_TOKEN, all_complete(calls), 40)
        other_feed = wait_for_feed(server, *other, all_complete(other_calls), 20)
        yield Traffic(server, calls, feed, other, other_calls, other_feed)
    finally:
        server.stop()


def twilio_client(
    server: Server, username: str = ACCOUNT_SID, password: str = AUTH_TOKEN
) -> Client:
    client = Client(username, password)
    client.insights.base_url = server.url
    return client


# --- comparing REST records with feed data -------------------------------------------------------


def rest_summary_of(data: dict[str, Any], base_url: str) -> dict[str, Any]:
    """What the REST API must answer for a summary whose stream (v2) data is ``data``."""
    expected = {k: v for k, v in data.items() if k not in STREAM_ONLY}
    expected["url"] = f"{base_url}/v1/Voice/{data['call_sid']}/Summary"
    expected["annotation"] = None
    return expected


def instance_summary(instance: Any) -> dict[str, Any]:
    """A twilio-python summary instance as wire JSON (datetimes back to Twilio's format)."""
    out: dict[str, Any] = {}
    for key in SUMMARY_KEYS:
        value = getattr(instance, SUMMARY_ATTRS.get(key, key))
        out[key] = f"{value:%Y-%m-%dT%H:%M:%SZ}" if isinstance(value, datetime) else value
    return out


def instance_record(instance: Any, keys: list[str]) -> dict[str, Any]:
    return {key: getattr(instance, key) for key in keys}


def canonical(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(json.dumps(record, sort_keys=True) for record in records)


def start_of(summary: dict[str, Any]) -> str:
    return str(summary["start_time"] or summary["created_time"] or summary["end_time"])


def utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


# --- per call: summary, events, metrics ----------------------------------------------------------


def test_every_summary_is_the_complete_summary_the_feed_published(traffic: Traffic) -> None:
    client = twilio_client(traffic.server)
    for call_sid in traffic.calls:
        data = traffic.feed.complete(call_sid)
        assert data is not None
        expected = rest_summary_of(data, traffic.server.url)
        for state in (None, "complete", "partial", "all"):
            context = client.insights.v1.calls(call_sid).summary()
            fetched = context.fetch() if state is None else context.fetch(processing_state=state)
            got = instance_summary(fetched)
            assert got == {k: v for k, v in expected.items() if k != "answered_by"}, call_sid
            assert fetched.answered_by in ("unknown", "human", "machine_start", "fax")
        call = client.insights.v1.calls(call_sid).fetch()
        assert call.sid == call_sid
        assert call.links["summary"] == expected["url"]


def test_events_by_edge_are_the_feed_s_call_events(traffic: Traffic) -> None:
    client = twilio_client(traffic.server)
    edges_seen: set[str] = set()
    for call_sid in traffic.calls:
        published = traffic.feed.events.get(call_sid, [])
        assert published, call_sid
        keys = list(published[0])
        listed = [
            instance_record(e, keys) for e in client.insights.v1.calls(call_sid).events.list()
        ]
        assert canonical(listed) == canonical(published), call_sid
        stamps = [e["timestamp"] for e in listed]
        assert stamps == sorted(stamps)  # oldest first
        for edge in {e["edge"] for e in published}:
            edges_seen.add(edge)
            by_edge = client.insights.v1.calls(call_sid).events.list(edge=edge, page_size=7)
            got = [instance_record(e, keys) for e in by_edge]
            assert got == [e for e in listed if e["edge"] == edge], (call_sid, edge)
    assert edges_seen >= {"sdk_edge", "carrier_edge", "sip_edge", "client_edge"}


def test_metrics_by_edge_and_direction_are_the_feed_s_metric_records(traffic: Traffic) -> None:
    client = twilio_client(traffic.server)
    pairs_seen: set[tuple[str, str]] = set()
    for call_sid in traffic.calls:
        published = traffic.feed.metrics.get(call_sid, [])
        metrics = client.insights.v1.calls(call_sid).metrics
        if not published:  # a call that never had media: an empty list, not a 404
            assert metrics.list() == []
            continue
        keys = list(published[0])
        listed = [instance_record(m, keys) for m in metrics.list()]
        assert canonical(listed) == canonical(published), call_sid
        assert [m["timestamp"] for m in listed] == sorted(m["timestamp"] for m in listed)
        pairs = {(m["edge"], m["direction"]) for m in published}
        for edge, direction in pairs:
            pairs_seen.add((edge, direction))
            both = metrics.list(edge=edge, direction=direction, page_size=4)
            got = [instance_record(m, keys) for m in both]
            want = [m for m in listed if m["edge"] == edge and m["direction"] == direction]
            assert got == want, (call_sid, edge, direction)
        for edge in {edge for edge, _ in pairs}:
            got = [instance_record(m, keys) for m in metrics.list(edge=edge)]
            assert got == [m for m in listed if m["edge"] == edge]
        for direction in {direction for _, direction in pairs}:
            got = [instance_record(m, keys) for m in metrics.list(direction=direction)]
            assert got == [m for m in listed if m["direction"] == direction]
    assert {edge for edge, _ in pairs_seen} >= {"sdk_edge", "carrier_edge", "client_edge"}
    assert {direction for _, direction in pairs_seen} >= {"inbound", "outbound"}


# --- the Summaries list --------------------------------------------------------------------------


def listed_sids(client: Client, **filters: Any) -> list[str]:
    return [s.call_sid for s in client.insights.v1.call_summaries.list(**filters)]


def fetched_sids(server: Server, **params: str) -> list[str]:
    """The Summaries list over plain HTTP (for callstream's own filters), every page."""
    sids: list[str] = []
    with server.client() as http:
        url: str | None = f"{server.url}/v1/Voice/Summaries"
        query: dict[str, str] | None = {**params, "PageSize": "5"}
        while url is not None:
            response = http.get(url, params=query)
            assert response.status_code == 200, response.text
            body = response.json()
            sids += [s["call_sid"] for s in body["call_summaries"]]
            url, query = body["meta"]["next_page_url"], None
    return sids


def test_each_summaries_filter_narrows_to_the_matching_calls(traffic: Traffic) -> None:
    client = twilio_client(traffic.server)
    summaries = {sid: traffic.feed.complete(sid) or {} for sid in traffic.calls}
    everyone = set(summaries)
    assert set(listed_sids(client)) == everyone

    def check(expected: set[str], **filters: Any) -> None:
        assert expected, f"the traffic has no call for {filters}: the check would prove nothing"
        assert expected < everyone, f"{filters} matches every call: the check would prove nothing"
        own = filters.pop("callstream", None)  # callstream's own filters, not in twilio-python
        got = fetched_sids(traffic.server, **own) if own else listed_sids(client, **filters)
        assert len(got) == len(set(got))
        assert set(got) == expected, filters

    def matching(test: Callable[[dict[str, Any]], bool]) -> set[str]:
        return {sid for sid, s in summaries.items() if test(s)}

    some = next(
        s
        for s in summaries.values()
        if s["from"]["caller"] and s["to"]["callee"] and s["properties"]["direction"] != "unknown"
    )
    check(
        matching(lambda s: s["from"]["caller"] == some["from"]["caller"]),
        from_=some["from"]["caller"],
    )
    check(matching(lambda s: s["to"]["callee"] == some["to"]["callee"]), to=some["to"]["callee"])
    for call_type in {s["call_type"] for s in summaries.values()}:
        check(matching(lambda s, t=call_type: s["call_type"] == t), call_type=call_type)
    check(matching(lambda s: s["call_type"] in ("sip", "trunking")), call_type="sip,trunking")
    for state in {s["call_state"] for s in summaries.values()}:
        check(matching(lambda s, c=state: s["call_state"] == c), call_state=state)
    direction = some["properties"]["direction"]
    check(matching(lambda s: s["properties"]["direction"] == direction), direction=direction)
    country = next(
        s["from"]["country_code"] for s in summaries.values() if s["from"]["country_code"]
    )
    check(matching(lambda s: s["from"]["country_code"] == country), from_country_code=country)
    check(matching(lambda s: bool(s["tags"])), has_tag=True)
    check(matching(lambda s: not s["tags"]), has_tag=False)
    tag = Counter(t for s in summaries.values() for t in s["tags"]).most_common(1)[0][0]
    check(matching(lambda s: tag in s["tags"]), callstream={"Tags": tag})
    check(
        matching(lambda s: s["properties"]["last_sip_response_num"] not in (0, 200)),
        abnormal_session=True,
    )

    starts = sorted(start_of(s) for s in summaries.values())
    middle = starts[len(starts) // 2]
    check(matching(lambda s: start_of(s) >= middle), start_time=middle)
    check(matching(lambda s: start_of(s) < middle), end_time=middle)
    first, last = starts[1], starts[-2]
    check(matching(lambda s: first <= start_of(s) < last), start_time=first, end_time=last)
    # Relative times count back from now; the simulated calls are from 2025.
    assert listed_sids(client, start_time="1w") == []
    assert set(listed_sids(client, end_time="0m")) == everyone

    assert set(listed_sids(client, processing_state="completed")) == everyone
    assert set(listed_sids(client, processing_state="all")) == everyone
    assert listed_sids(client, processing_state="partial") == []
    both = matching(lambda s: s["call_type"] == "client" and bool(s["tags"]))
    check(both, call_type="client", has_tag=True)


def test_sort_by_orders_newest_first(traffic: Traffic) -> None:
    client = twilio_client(traffic.server)
    for sort_by, member in (("start_time", "start_time"), ("end_time", "end_time")):
        listed = client.insights.v1.call_summaries.list(sort_by=sort_by, page_size=5)
        times = [getattr(s, member) for s in listed]
        assert len(times) == len(traffic.calls)
        assert all(isinstance(t, datetime) for t in times)
        assert times == sorted(times, reverse=True), sort_by
        assert len(set(times)) > 1
    by_start = listed_sids(client, sort_by="start_time")
    by_end = listed_sids(client, sort_by="end_time")
    assert by_start != by_end  # the two orders differ on this traffic, so both are tested


def test_small_pages_return_each_record_once_and_page_back(traffic: Traffic) -> None:
    client = twilio_client(traffic.server)
    for page_size in (1, 5, 7):
        listed = listed_sids(client, page_size=page_size)
        assert sorted(listed) == sorted(traffic.calls)
    with traffic.server.client() as http:
        first = http.get("/v1/Voice/Summaries", params={"PageSize": 5}).json()
        assert first["meta"]["next_page_url"].startswith(traffic.server.url + "/v1/Voice/")
        second = http.get(first["meta"]["next_page_url"]).json()
        assert second["meta"]["page"] == 1
        back = http.get(second["meta"]["previous_page_url"]).json()
        assert back["call_summaries"] == first["call_summaries"]
        assert back["meta"]["next_page_url"] is not None
    busiest = max(traffic.calls, key=lambda sid: len(traffic.feed.events.get(sid, [])))
    events = client.insights.v1.calls(busiest).events
    whole = [(e.timestamp, e.name, e.edge) for e in events.list(page_size=1000)]
    paged = [(e.timestamp, e.name, e.edge) for e in events.list(page_size=3)]
    assert len(whole) > 6 and paged == whole


# --- tenancy and errors --------------------------------------------------------------------------


def test_another_account_sees_only_its_own_calls(traffic: Traffic) -> None:
    mine = twilio_client(traffic.server)
    theirs = twilio_client(traffic.server, *traffic.other)
    assert set(listed_sids(theirs)) == set(traffic.other_calls)
    assert not set(listed_sids(mine)) & set(traffic.other_calls)
    for call_sid in traffic.calls[:3]:
        with pytest.raises(TwilioRestException) as refused:
            theirs.insights.v1.calls(call_sid).summary().fetch()
        assert refused.value.status == 404
        with pytest.raises(TwilioRestException) as refused:
            theirs.insights.v1.calls(call_sid).fetch()
        assert refused.value.status == 404
        for listing in (
            theirs.insights.v1.calls(call_sid).events,
            theirs.insights.v1.calls(call_sid).metrics,
        ):
            with pytest.raises(TwilioException) as failed:
                listing.list()
            assert failed.value.args[1].status_code == 404
    # Their own call reads fine through the same client.
    other_sid = traffic.other_calls[0]
    fetched = theirs.insights.v1.calls(other_sid).summary().fetch()
    assert (
        instance_summary(fetched)["tags"] == (traffic.other_feed.complete(other_sid) or {})["tags"]
    )


def test_bad_requests_name_the_parameter(traffic: Traffic) -> None:
    call_sid = traffic.calls[0]
    with traffic.server.client() as http:
        for path, params, parameter in [
            ("/v1/Voice/Summaries", {"Subaccount": "AC" + "0" * 32}, "Subaccount"),
            ("/v1/Voice/Summaries", {"Callstate": "completed"}, "Callstate"),
            ("/v1/Voice/Summaries", {"CallType": "pstn"}, "CallType"),
            ("/v1/Voice/Summaries", {"StartTime": "yesterday"}, "StartTime"),
            ("/v1/Voice/Summaries", {"HasTag": "maybe"}, "HasTag"),
            ("/v1/Voice/Summaries", {"SortBy": "duration"}, "SortBy"),
            (f"/v1/Voice/{call_sid}/Summary", {"ProcessingState": "done"}, "ProcessingState"),
            (f"/v1/Voice/{call_sid}/Events", {"Edge": "ashburn"}, "Edge"),
            (f"/v1/Voice/{call_sid}/Metrics", {"Direction": "up"}, "Direction"),
            (f"/v1/Voice/{call_sid}/Events", {"PageToken": "PTnonsense"}, "PageToken"),
        ]:
            response = http.get(path, params=params)
            assert response.status_code == 400, (path, params)
            body = response.json()
            assert body["code"] == 20001 and body["status"] == 400
            assert parameter in body["message"], body
        token_of_another_list = http.get("/v1/Voice/Summaries", params={"PageSize": 1}).json()[
            "meta"
        ]["next_page_url"]
        token = httpx.URL(token_of_another_list).params["PageToken"]
        wrong = http.get(f"/v1/Voice/{call_sid}/Events", params={"PageToken": token})
        assert wrong.status_code == 400
        # Well-formed tokens whose keys no list has: a 400, never a 500.
        for key in (f"[1{'0' * 400}, 5]", "[1.5, 99999999999999999999999]", '[1.5, "x", 3]'):
            raw = f'{{"direction": "after", "key": {key}}}'.encode()
            forged = "PT" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
            for path in (f"/v1/Voice/{call_sid}/Metrics", "/v1/Voice/Summaries"):
                response = http.get(path, params={"PageToken": forged})
                assert response.status_code == 400, (key, path, response.text)
        unknown = http.get("/v1/Voice/CA" + "0" * 32 + "/Summary")
        assert unknown.status_code == 404 and unknown.json()["code"] == 20404
        assert http.get("/v1/Voice/not-a-call/Events").status_code == 404
    anonymous = httpx.get(f"{traffic.server.url}/v1/Voice/Summaries")
    assert anonymous.status_code == 401


# --- partial summaries ---------------------------------------------------------------------------


def test_partial_summaries_before_the_complete_one(tmp_path: Path) -> None:
    # The complete summary is an hour away: everything here sees partial summaries only.
    server = Server(
        tmp_path / "data",
        extra_env={"CALLSTREAM_PARTIAL_AFTER": "1s", "CALLSTREAM_COMPLETE_AFTER": "1h"},
    ).start()
    try:
        calls = post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=3, seed=5)
        feed = wait_for_feed(
            server,
            ACCOUNT_SID,
            AUTH_TOKEN,
            lambda feed: all(sid in feed.summaries for sid in calls),
            30,
        )
        client = twilio_client(server)
        for call_sid in calls:
            latest = feed.summaries[call_sid][-1]
            assert latest["processing_state"] == "partial"
            for state in (None, "partial", "all"):
                context = client.insights.v1.calls(call_sid).summary()
                fetched = (
                    context.fetch() if state is None else context.fetch(processing_state=state)
                )
                assert fetched.processing_state == "partial"
                assert instance_summary(fetched)["end_time"] == latest["end_time"]
            with pytest.raises(TwilioRestException) as missing:
                client.insights.v1.calls(call_sid).summary().fetch(processing_state="complete")
            assert missing.value.status == 404
        assert listed_sids(client, processing_state="completed") == []
        assert set(listed_sids(client, processing_state="partial")) == set(calls)
        assert set(listed_sids(client, processing_state="started")) == set(calls)
    finally:
        server.stop()
