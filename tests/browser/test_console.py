"""The web console in Chromium: login, the live overview, calls and their charts, and
Event Streams sinks and subscriptions created from the UI delivering to a real receiver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from callstream.model.telemetry import encode_batch
from callstream.sim import SimConfig, Simulation
from tests.browser.conftest import ConsoleWatch, Receiver, start_server, wait_until
from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server
from tests.integration.traffic import NO_LOSS, post_traffic

INSIGHTS = "com.twilio.voice.insights."
TEST_EVENT = "com.twilio.eventstreams.test-event"
# A Voice Insights list is read whole with this page size (the tests' calls are few).
ALL = {"PageSize": 1000}


def log_in(page: Page, server: Server, password: str = AUTH_TOKEN) -> None:
    page.goto(f"{server.url}/console/")
    page.fill("#login-username", ACCOUNT_SID)
    page.fill("#login-password", password)
    page.click("#login-submit")


def logged_in(page: Page, server: Server) -> None:
    log_in(page, server)
    expect(page.locator("#who")).to_have_text(ACCOUNT_SID)


def post_records(server: Server, records: list[Any]) -> None:
    with server.client() as client:
        response = client.post(
            "/v1/Telemetry",
            content=encode_batch(records),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 202, response.text


def number(page: Page, selector: str) -> int:
    text = page.inner_text(selector).strip()
    return int(text) if text.isdigit() else -1


def events_in_log(server: Server) -> int:
    """How many insight events the account's log holds, read through the long-poll feed."""
    total, after = 0, 0
    with server.client() as client:
        while True:
            body = client.get("/callstream/v1/Events", params={"After": after, "Limit": 1000})
            page = body.json()
            total += len(page["events"])
            if page["next_after"] == after:
                return total
            after = page["next_after"]


# --- login and the console's own endpoints --------------------------------------------------------


def test_a_wrong_token_is_refused_with_a_message_and_the_right_one_logs_in(
    server: Server, page: Page, watch: ConsoleWatch, artifacts: Path
) -> None:
    response = page.goto(f"{server.url}/console/")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    # The refused login is a 401 fetch, which Chromium logs as a console error.
    watch.expect(r"status of 401 .*/callstream/v1/Account")
    log_in(page, server, password="not-the-token")
    expect(page.locator("#login-message .notice.error")).to_contain_text("refused")
    assert page.evaluate("sessionStorage.length") == 0
    expect(page.locator("#nav")).to_be_hidden()
    page.screenshot(path=artifacts / "01-login-refused.png")

    page.fill("#login-password", AUTH_TOKEN)
    page.click("#login-submit")
    expect(page.locator("#who")).to_have_text(ACCOUNT_SID)
    expect(page.locator("#rate-total")).to_be_visible()
    page.reload()  # the session survives a reload of the tab ...
    expect(page.locator("#who")).to_have_text(ACCOUNT_SID)
    page.click("#logout")  # ... and not a logout
    expect(page.locator("#login-form")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_the_console_data_endpoints_authenticate_and_check_their_parameters(
    server: Server,
) -> None:
    for path in ("/callstream/v1/Account", "/callstream/v1/ActiveCalls"):
        refused = httpx.get(server.url + path, auth=(ACCOUNT_SID, "wrong"))
        assert refused.status_code == 401 and refused.json()["code"] == 20003
    refused = httpx.get(server.url + "/callstream/v1/Events/Stream")
    assert refused.status_code == 401 and refused.json()["code"] == 20003
    with server.client() as client:
        assert client.get("/callstream/v1/ActiveCalls", params={"PageSize": 0}).status_code == 400
        bad_type = client.get("/callstream/v1/Events/Stream", params={"Type": "no.such.type"})
        assert bad_type.status_code == 400
        assert client.get("/callstream/v1/Events/Stream", params={"After": "x"}).status_code == 400
        assert client.get("/callstream/v1/Account").json()["account_sid"] == ACCOUNT_SID


# --- overview ------------------------------------------------------------------------------------


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own (set up before the page, so stopped after it closes)."""
    running = start_server(tmp_path)
    yield running
    running.stop()


def test_the_overview_counts_live_events_and_follows_active_calls(
    own_server: Server, page: Page, artifacts: Path
) -> None:
    server = own_server
    simulation = Simulation(SimConfig(calls=6, seed=21, delivery=NO_LOSS))
    records = [record for _, record in simulation]
    call_sids = {plan.call_sid for plan in simulation.plans()}
    logged_in(page, server)
    expect(page.locator("#stream-state")).to_have_text("live")
    assert number(page, "#events-total") == 0

    # The first third of the traffic: calls have started, and not all have ended.
    first = len(records) // 3
    post_records(server, records[:first])
    wait_until(lambda: number(page, "#events-total") > 0, 30, "the first events")
    wait_until(lambda: number(page, "#active-count") >= 1, 30, "an active call")
    listed = page.locator("#active-table a").all_inner_texts()
    assert listed and set(listed) <= call_sids
    seen = number(page, "#events-total")
    page.screenshot(path=artifacts / "02-overview-live.png", full_page=True)

    # The rest: the counter rises without a reload, and every call ends.
    post_records(server, records[first:])
    wait_until(lambda: number(page, "#events-total") > seen, 30, "the counter to rise")
    wait_until(lambda: number(page, "#active-count") == 0, 20, "every call to end")
    partial = f"{INSIGHTS}call-summary.partial"
    expect(page.locator(f'#rates-table tr[data-type="{partial}"]')).to_be_visible()
    # The page counted every event the account's log got while it was open.
    wait_until(
        lambda: number(page, "#events-total") == events_in_log(server),
        30,
        "the counter to match the events log",
    )
    page.screenshot(path=artifacts / "03-overview-after.png", full_page=True)


# --- calls ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calls(server: Server) -> list[str]:
    """Thirty simulated calls, once all of them have a summary."""
    sids = post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=30, seed=3)
    with server.client() as client:

        def summarised() -> bool:
            listed = client.get("/v1/Voice/Summaries", params=ALL).json()["call_summaries"]
            return set(sids) <= {s["call_sid"] for s in listed}

        wait_until(summarised, 30, "every call's summary")
    return sids


def warnings(events: list[dict[str, Any]], name: str, kind: str) -> int:
    group = f"network-quality-warning-{kind}"
    return sum(1 for e in events if e["group"] == group and e["name"] == name)


def poorest_client_call(server: Server, sids: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """The client call with SDK warnings on jitter and MOS that raised the most warnings."""
    best: tuple[int, str, list[dict[str, Any]]] | None = None
    with server.client() as client:
        for sid in sids:
            events = client.get(f"/v1/Voice/{sid}/Events", params=ALL).json()["events"]
            raised = sum(1 for e in events if e["group"].endswith("-warning-raised"))
            poor = warnings(events, "high-jitter", "raised") and warnings(
                events, "low-mos", "raised"
            )
            if poor and (best is None or raised > best[0]):
                best = (raised, sid, events)
    assert best is not None, "the simulation made no poor-quality client call"
    return best[1], best[2]


def points_expected(metrics: list[dict[str, Any]]) -> dict[str, int]:
    """How many samples each chart must draw: the records carrying its measure."""
    counts = {"jitter": 0, "packet-loss": 0, "rtt": 0, "mos": 0}
    for record in metrics:
        interval = (record[record["edge"]] or {}).get("interval") or {}
        counts["jitter"] += "jitter" in interval
        counts["packet-loss"] += "packets_loss_percentage" in interval
        counts["rtt"] += "rtt" in interval
        counts["mos"] += "mos" in interval
    return counts


def test_the_calls_list_filters_through_the_voice_insights_api(
    server: Server, calls: list[str], page: Page, watch: ConsoleWatch, artifacts: Path
) -> None:
    logged_in(page, server)
    with server.client() as client:
        everything = client.get("/v1/Voice/Summaries", params=ALL).json()["call_summaries"]
    page.click('#nav a[data-nav="calls"]')
    rows = page.locator("#calls-table tbody tr")
    expect(rows).to_have_count(25)  # a page of 25, newest first
    first_page = [row.get_attribute("data-call") for row in rows.all()]
    assert first_page == [s["call_sid"] for s in everything[:25]]
    page.click('a[data-page="Older"]')
    expect(rows).to_have_count(len(everything) - 25)
    assert [row.get_attribute("data-call") for row in rows.all()] == [
        s["call_sid"] for s in everything[25:]
    ]
    page.click('#calls-filter button[type="reset"]')
    expect(rows).to_have_count(25)
    page.select_option('select[name="CallType"]', "client")
    page.select_option('select[name="HasTag"]', "true")
    page.click('#calls-filter button[type="submit"]')
    with server.client() as client:
        wanted = client.get(
            "/v1/Voice/Summaries", params={"CallType": "client", "HasTag": "true", **ALL}
        ).json()["call_summaries"]
    assert wanted, "the simulation made no tagged client call"
    rows = page.locator("#calls-table tbody tr")
    expect(rows).to_have_count(len(wanted))
    shown = [row.get_attribute("data-call") for row in rows.all()]
    assert shown == [s["call_sid"] for s in wanted]
    for row in rows.all():
        assert row.locator("td").nth(3).inner_text() == "client"
        assert row.locator(".tag").count() >= 1
    assert "CallType=client" in page.url  # the filter is in the address
    page.screenshot(path=artifacts / "04-calls-filtered.png", full_page=True)

    # A filter the API refuses is shown with the API's message (a 400 fetch: logged).
    watch.expect(r"status of 400 .*/v1/Voice/Summaries")
    page.fill('input[name="StartTime"]', "yesterday")
    page.click('#calls-filter button[type="submit"]')
    expect(page.locator("#calls-result .notice.error")).to_contain_text("StartTime")


def test_a_call_page_draws_its_metrics_and_marks_its_quality_warnings(
    server: Server, calls: list[str], page: Page, artifacts: Path
) -> None:
    sid, events = poorest_client_call(server, calls)
    with server.client() as client:
        metrics = client.get(f"/v1/Voice/{sid}/Metrics", params=ALL).json()["metrics"]
        summary = client.get(f"/v1/Voice/{sid}/Summary").json()
    logged_in(page, server)
    page.goto(f"{server.url}/console/#/calls?CallType=client")
    page.click(f'#calls-table a[href="#/calls/{sid}"]')
    expect(page.locator("h1")).to_have_text(sid)

    expected = points_expected(metrics)
    for chart, count in expected.items():
        figure = page.locator(f'figure[data-chart="{chart}"]')
        assert count > 0, chart
        expect(figure.locator("circle.pt")).to_have_count(count)
        assert figure.locator("path.line").count() >= 1
    # One SDK series (sdk_edge both) for RTT and MOS; gateway streams join jitter and loss.
    expect(page.locator('figure[data-chart="mos"] g.series')).to_have_count(1)
    streams = {(m["edge"], m["direction"]) for m in metrics}
    expect(page.locator('figure[data-chart="jitter"] g.series')).to_have_count(len(streams))

    # Every raise and clear of the chart's warnings is marked on it.
    for chart, name in (("jitter", "high-jitter"), ("mos", "low-mos"), ("rtt", "high-rtt")):
        figure = page.locator(f'figure[data-chart="{chart}"]')
        for kind in ("raised", "cleared"):
            markers = figure.locator(f'line.marker.{kind}[data-warning="{name}"]')
            expect(markers).to_have_count(warnings(events, name, kind))
    assert warnings(events, "high-jitter", "raised") > 0

    # The summary with every edge it reported, and the whole timeline.
    for edge in ("client_edge", "sdk_edge"):
        assert summary[edge] is not None
        expect(page.locator(f'details[data-edge="{edge}"]')).to_be_visible()
    page.click('details[data-edge="sdk_edge"] > summary')
    expect(page.locator('details[data-edge="sdk_edge"] dt', has_text="mos").first).to_be_visible()
    for tag in summary["tags"]:
        expect(page.locator("#call-summary .tag", has_text=tag)).to_be_visible()
    expect(page.locator("#timeline-table tbody tr")).to_have_count(len(events))
    warned = page.locator('#timeline-table tr[data-group="network-quality-warning-raised"]')
    expect(warned).to_have_count(sum(1 for e in events if e["group"].endswith("warning-raised")))
    page.select_option("#timeline-edge", "client_edge")
    client_events = sum(1 for e in events if e["edge"] == "client_edge")
    expect(page.locator("#timeline-table tbody tr")).to_have_count(client_events)
    page.screenshot(path=artifacts / "05-call-page.png", full_page=True)


# --- Event Streams -------------------------------------------------------------------------------


def cloudevents(receiver: Receiver) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for _, body in receiver.received():
        decoded = json.loads(body)
        found.extend(decoded if isinstance(decoded, list) else [decoded])
    return found


def test_data_is_rendered_as_text_never_as_markup(
    server: Server, page: Page, artifacts: Path
) -> None:
    markup = '<img src="/nowhere" onerror="window.injected = true">'
    with server.client() as client:
        created = client.post(
            "/v1/Sinks",
            data={
                "Description": markup,
                "SinkType": "webhook",
                "SinkConfiguration": json.dumps(
                    {"destination": "https://hooks.example.com/x", "method": "POST"}
                    | {"batch_events": False}
                ),
            },
        )
        assert created.status_code == 201, created.text
    logged_in(page, server)
    page.click('#nav a[data-nav="streams"]')
    sid = created.json()["sid"]
    row = page.locator(f'#sinks-table tr[data-sink="{sid}"]')
    expect(row.locator("td").nth(1)).to_have_text(markup)
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.injected") is None


def delivery_api(server: Server) -> bool:
    with server.client() as client:
        return client.get("/callstream/v1/Sinks/Status").status_code == 200


def test_a_webhook_sink_and_subscription_made_in_the_console_deliver_events(
    server: Server,
    calls: list[str],
    page: Page,
    watch: ConsoleWatch,
    receiver: Receiver,
    artifacts: Path,
) -> None:
    logged_in(page, server)
    page.click('#nav a[data-nav="streams"]')
    page.fill("#sink-description", "console receiver")
    page.fill("#sink-webhook-destination", receiver.url)
    page.click("#sink-create")
    created = page.locator("#streams-message .notice.ok")
    expect(created).to_contain_text("Created sink DG")
    sink_sid = created.inner_text().removeprefix("Created sink ").rstrip(".")
    row = page.locator(f'#sinks-table tr[data-sink="{sink_sid}"]')
    expect(row.locator(".badge")).to_have_text("active")
    expect(row.locator("td").nth(4)).to_have_text(receiver.url)

    page.fill("#subscription-description", "everything")
    page.select_option("#subscription-sink", sink_sid)
    page.click("#subscription-all")
    page.click("#subscription-create")
    expect(page.locator("#streams-message .notice.ok")).to_contain_text("Created subscription")
    expect(
        page.locator(f'#subscriptions-table a[href="#/streams/sinks/{sink_sid}"]')
    ).to_be_visible()
    page.screenshot(path=artifacts / "06-event-streams.png", full_page=True)

    # Traffic after the subscription reaches the receiver, signed as Twilio signs it.
    post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=3, seed=41)
    wait_until(
        lambda: any(e["type"].startswith(INSIGHTS) for e in cloudevents(receiver)),
        30,
        "insight events at the receiver",
    )
    assert all("x-twilio-signature" in {k.lower() for k in h} for h, _ in receiver.received())

    # Sink Test from the table, then Validate with the test_id the receiver got.
    row.locator("button[data-action=test]").click()
    expect(page.locator("#streams-message .notice.ok")).to_contain_text("Test event queued")
    tests = wait_until(
        lambda: [e for e in cloudevents(receiver) if e["type"] == TEST_EVENT], 30, "the test event"
    )
    page.click(f'#sinks-table a[href="#/streams/sinks/{sink_sid}"]')
    expect(page.locator("h1")).to_have_text(sink_sid)
    page.fill("#validate-test-id", tests[-1]["data"]["test_id"])
    page.click("#validate-form button")
    expect(page.locator("#sink-message .notice.ok")).to_contain_text("validated")

    if delivery_api(server):
        # The attempt log shows the receiver's response codes.
        expect(page.locator('#attempts-table td[data-status="200"]').first).to_be_visible()
    else:
        # Without the delivery status API the page says so instead of failing (its 404 is
        # a logged fetch error, expected here).
        watch.expect(r"status of 404 .*/callstream/v1/Sinks/")
        expect(page.locator("#attempts .notice")).to_contain_text("Unavailable")
    page.screenshot(path=artifacts / "07-sink-page.png", full_page=True)


def test_the_sink_page_shows_failed_attempts_dead_letters_and_replays_them(
    tmp_path: Path, receiver: Receiver, page: Page, artifacts: Path
) -> None:
    # Quick retries, a one-second retry window and a low failure threshold, so events to a
    # failing receiver are dead-lettered and the sink is marked failed within seconds.
    server = start_server(
        tmp_path,
        CALLSTREAM_DELIVERY_RETRY_BASE="100ms",
        CALLSTREAM_DELIVERY_RETRY_WINDOW="1s",
        CALLSTREAM_SINK_FAILURE_THRESHOLD="3",
    )
    try:
        if not delivery_api(server):
            pytest.skip("this build has no delivery status API (/callstream/v1/Sinks/Status)")
        receiver.status = 500
        with server.client() as client:
            config = {"destination": receiver.url, "method": "POST", "batch_events": False}
            created = client.post(
                "/v1/Sinks",
                data={
                    "Description": "failing receiver",
                    "SinkType": "webhook",
                    "SinkConfiguration": json.dumps(config),
                },
            )
            assert created.status_code == 201, created.text
            sink = created.json()
            subscribed = client.post(
                "/v1/Subscriptions",
                data={
                    "Description": "partial summaries",
                    "SinkSid": sink["sid"],
                    "Types": json.dumps({"type": f"{INSIGHTS}call-summary.partial"}),
                },
            )
            assert subscribed.status_code == 201, subscribed.text
        post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=3, seed=41)

        logged_in(page, server)
        page.goto(f"{server.url}/console/#/streams/sinks/{sink['sid']}")
        expect(page.locator('#attempts-table td[data-status="500"]').first).to_be_visible()
        letters = page.locator("#dead-letters-table tbody tr")
        expect(letters.first).to_be_visible(timeout=30_000)
        expect(page.locator("#sink-enable")).to_be_visible(timeout=30_000)  # marked failed
        page.screenshot(path=artifacts / "08-sink-failing.png", full_page=True)

        receiver.status = 200
        page.click("#sink-enable")
        expect(page.locator("#sink-message .notice.ok")).to_contain_text("enabled")
        expect(page.locator("#sink-enable")).to_be_hidden()
        event_id = letters.first.get_attribute("data-event")
        letters.first.locator("button[data-action=replay]").click()
        expect(page.locator("#sink-message .notice.ok")).to_contain_text("Replayed 1")
        expect(page.locator('#attempts-table td[data-status="200"]').first).to_be_visible()
        delivered = wait_until(
            lambda: [e for e in cloudevents(receiver) if e["id"] == event_id],
            30,
            "the replayed event at the receiver",
        )
        assert delivered[-1]["type"] == f"{INSIGHTS}call-summary.partial"
        page.screenshot(path=artifacts / "09-sink-replayed.png", full_page=True)
        page.goto("about:blank")  # close the page's streams before the server stops
    finally:
        server.stop()
