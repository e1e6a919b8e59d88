"""Webhook delivery end to end: a real server, sinks and subscriptions made with twilio-python,
simulated telemetry, and a real HTTP receiver on 127.0.0.1 that records what arrives and
checks every request with twilio-python's ``RequestValidator``."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]

from callstream.sinks.webhook import GuardedResolver, forbidden_reason, split_credentials
from callstream.store.delivery import Attempt, DeadLetter
from tests.integration.backends import StoreProxy
from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server, free_port
from tests.integration.traffic import post_traffic

GATEWAY_EVENT = "com.twilio.voice.insights.call-event.gateway"
GATEWAY_METRICS = "com.twilio.voice.insights.call-metrics.gateway"
TEST_EVENT = "com.twilio.eventstreams.test-event"
FAST = {
    "CALLSTREAM_ALLOW_PRIVATE_DESTINATIONS": "true",
    "CALLSTREAM_PARTIAL_AFTER": "1s",
    "CALLSTREAM_COMPLETE_AFTER": "1h",
    "CALLSTREAM_DELIVERY_RETRY_BASE": "0.1s",
    "CALLSTREAM_DELIVERY_RETRY_CAP": "0.5s",
}


@dataclass
class Request:
    url: str
    body: str
    signature: str
    authorization: str | None
    content_type: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    arrived: float = 0.0
    """time.monotonic() when the request arrived."""

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = json.loads(self.body)
        return events


@dataclass
class Receiver:
    """An aiohttp server on its own thread; ``respond`` picks each request's status."""

    respond: Callable[[Request], int] = lambda request: 200
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    host: str = "127.0.0.1"
    delay: float = 0.0
    """Seconds each answer waits (a slow or, with a large value, a hanging receiver)."""
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        recorded = Request(
            url=str(request.url),
            body=(await request.read()).decode("utf-8"),
            signature=request.headers.get("X-Twilio-Signature", ""),
            authorization=request.headers.get("Authorization"),
            content_type=request.headers.get("Content-Type", ""),
            method=request.method,
            headers=dict(request.headers),
            arrived=time.monotonic(),
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.respond(recorded)
        with self._lock:
            self.requests.append(recorded)
        return web.Response(status=status)

    def start(self) -> Receiver:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            self.port = self.port or free_port()
            await web.TCPSite(self._runner, self.host, self.port).start()
            ready.set()

        def run() -> None:
            assert self._loop is not None
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        assert ready.wait(10)
        return self

    def stop(self) -> None:
        assert self._loop is not None and self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def event_ids(self) -> list[str]:
        return [e["id"] for r in self.snapshot() for e in r.events]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)  # polling interval while waiting on a condition with a deadline
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def twilio(server: Server) -> Client:
    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.events.base_url = server.url
    return client


def subscribe(client: Client, destination: str, batch: bool, types: list[str]) -> str:
    sink = client.events.v1.sinks.create(
        description="receiver",
        sink_type="webhook",
        sink_configuration={"destination": destination, "method": "POST", "batch_events": batch},
    )
    client.events.v1.subscriptions.create(
        description="receiver", sink_sid=sink.sid, types=[{"type": t} for t in types]
    )
    return str(sink.sid)


class Store:
    """The delivery store, opened read-only-ish on the server's data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.store = StoreProxy(data_dir, lambda services: services.delivery)

    def dead_letters(self, sink_sid: str) -> list[DeadLetter]:
        return asyncio.run(self.store.dead_letters(sink_sid, 10_000))

    def attempts(self, sink_sid: str) -> list[Attempt]:
        return asyncio.run(self.store.attempts(sink_sid, 10_000))

    def pending(self, sink_sid: str) -> int:
        return asyncio.run(self.store.pending(sink_sid))


def live_event_ids(server: Server, types: set[str]) -> set[str]:
    """Every event of ``types`` the server has produced so far (the live feed)."""
    ids: set[str] = set()
    after = 0
    with server.client() as client:
        while True:
            page = client.get("/callstream/v1/Events", params={"After": after, "Limit": 1000})
            body = page.json()
            ids |= {e["id"] for e in body["events"] if e["type"] in types}
            if body["next_after"] == after:
                return ids
            after = body["next_after"]


def assert_signed(request: Request) -> None:
    assert request.content_type.startswith("application/json")
    assert "bodySHA256=" in request.url
    assert RequestValidator(AUTH_TOKEN).validate(request.url, request.body, request.signature)
    assert msgspec.json.encode(json.loads(request.body)).decode() == request.body  # compact


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def _server(tmp_path: Path, **env: str) -> Server:
    return Server(tmp_path / "data", extra_env={**FAST, **env}).start()


def test_every_event_arrives_signed_one_per_request(tmp_path: Path, receiver: Receiver) -> None:
    server = _server(tmp_path)
    try:
        client = twilio(server)
        sink_sid = subscribe(
            client,
            receiver.url("/hook?tenant=1"),
            batch=False,
            types=[GATEWAY_EVENT, GATEWAY_METRICS],
        )
        post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=3, seed=11)
        types = {GATEWAY_EVENT, GATEWAY_METRICS}
        wait_for(lambda: len(live_event_ids(server, types)) > 0, 30, "events to be produced")

        def all_arrived() -> bool:
            expected = live_event_ids(server, types)
            return expected <= set(receiver.event_ids())

        wait_for(all_arrived, 60, "every event at the receiver")
        requests = receiver.snapshot()
        assert requests and all(len(r.events) == 1 for r in requests)
        for request in requests:
            assert_signed(request)
            assert "?tenant=1&bodySHA256=" in request.url
            assert {e["type"] for e in request.events} <= types
        assert Store(server.data_dir).dead_letters(sink_sid) == []

        # A Sink Test event reaches the receiver with the test id.
        client.events.v1.sinks(sink_sid).sink_test.create()
        wait_for(
            lambda: any(e["type"] == TEST_EVENT for r in receiver.snapshot() for e in r.events),
            20,
            "the test event",
        )
        test = next(e for r in receiver.snapshot() for e in r.events if e["type"] == TEST_EVENT)
        data = test["data"] if isinstance(test["data"], dict) else json.loads(test["data"])
        validated = client.events.v1.sinks(sink_sid).sink_validate.create(test_id=data["test_id"])
        assert validated.result == "valid"
    finally:
        server.stop()


def test_batches_and_basic_auth(tmp_path: Path, receiver: Receiver) -> None:
    server = _server(tmp_path)
    try:
        client = twilio(server)
        destination = receiver.url().replace("http://", "http://user:p%40ss@")
        subscribe(client, destination, batch=True, types=[GATEWAY_EVENT, GATEWAY_METRICS])
        post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=4, seed=12)
        types = {GATEWAY_EVENT, GATEWAY_METRICS}
        wait_for(lambda: len(live_event_ids(server, types)) > 0, 30, "events to be produced")
        wait_for(
            lambda: live_event_ids(server, types) <= set(receiver.event_ids()),
            60,
            "every event at the receiver",
        )
        requests = receiver.snapshot()
        assert max(len(r.events) for r in requests) > 1
        assert all(len(r.events) <= 100 for r in requests)
        for request in requests:
            assert_signed(request)
            assert "user" not in request.url
            assert request.authorization == split_credentials(destination)[1]
    finally:
        server.stop()


def test_5xx_is_retried_until_delivered(tmp_path: Path, receiver: Receiver) -> None:
    failures = {"left": 5}
    lock = threading.Lock()

    def flaky(request: Request) -> int:
        with lock:
            if failures["left"] > 0:
                failures["left"] -= 1
                return 500 if failures["left"] % 2 else 429
        return 200

    receiver.respond = flaky
    server = _server(tmp_path)
    try:
        client = twilio(server)
        sink_sid = subscribe(client, receiver.url(), batch=False, types=[GATEWAY_EVENT])
        post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=2, seed=13)
        wait_for(lambda: len(live_event_ids(server, {GATEWAY_EVENT})) > 0, 30, "events")
        wait_for(
            lambda: live_event_ids(server, {GATEWAY_EVENT}) <= set(receiver.event_ids()),
            60,
            "every event at the receiver despite the failures",
        )
        store = Store(server.data_dir)
        wait_for(lambda: store.pending(sink_sid) == 0, 20, "an empty queue")
        requests = receiver.snapshot()
        for request in requests:
            assert_signed(request)
        # Redelivered events carry the same id; every body of an id is the same event.
        bodies: dict[str, str] = {}
        for request in requests:
            for event in request.events:
                text = json.dumps(event, sort_keys=True)
                assert bodies.setdefault(event["id"], text) == text
        assert len(requests) > len(bodies)  # there were retries
        attempts = store.attempts(sink_sid)
        assert {a.status for a in attempts if not a.ok} == {500, 429}
        assert store.dead_letters(sink_sid) == []
    finally:
        server.stop()


def test_4xx_dead_letters(tmp_path: Path, receiver: Receiver) -> None:
    receiver.respond = lambda request: 400
    server = _server(tmp_path)
    try:
        client = twilio(server)
        sink_sid = subscribe(client, receiver.url(), batch=False, types=[GATEWAY_EVENT])
        post_traffic(server, ACCOUNT_SID, AUTH_TOKEN, calls=1, seed=14)
        wait_for(lambda: len(live_event_ids(server, {GATEWAY_EVENT})) > 0, 30, "events")
        store = Store(server.data_dir)
        wait_for(
            lambda: (
                {d.event_id for d in store.dead_letters(sink_sid)}
                >= live_event_ids(server, {GATEWAY_EVENT})
            ),
            30,
            "every event dead-lettered",
        )
        dead = store.dead_letters(sink_sid)
        assert all("400" in d.reason and d.attempts == 1 for d in dead)
        # Each was tried once: no retries of a 4xx.
        assert len(receiver.event_ids()) == len(set(receiver.event_ids()))
        assert store.pending(sink_sid) == 0
    finally:
        server.stop()


def _private_name() -> str | None:
    """A name (not a literal) of this machine that resolves to a non-public address."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        return None
    return name if forbidden_reason(address) is not None else None


def test_private_destination_is_refused_at_connect_time(tmp_path: Path) -> None:
    name = _private_name()
    if name is None:
        pytest.skip("this machine's name does not resolve to a private address")
    receiver = Receiver(host="0.0.0.0").start()
    server = Server(
        tmp_path / "data", extra_env={**FAST, "CALLSTREAM_ALLOW_PRIVATE_DESTINATIONS": "false"}
    ).start()
    try:
        client = twilio(server)
        destination = f"http://{name}:{receiver.port}/hook"
        # The API accepts the name (it does not resolve names); delivery refuses its address.
        sink = client.events.v1.sinks.create(
            description="private",
            sink_type="webhook",
            sink_configuration={
                "destination": destination,
                "method": "POST",
                "batch_events": False,
            },
        )
        client.events.v1.sinks(sink.sid).sink_test.create()
        store = Store(server.data_dir)
        wait_for(lambda: bool(store.dead_letters(sink.sid)), 20, "the test event dead-lettered")
        (dead,) = store.dead_letters(sink.sid)
        assert "forbidden destination" in dead.reason and "ALLOW_PRIVATE" in dead.reason
        attempt = store.attempts(sink.sid)[0]
        assert not attempt.ok and attempt.status is None and "forbidden" in (attempt.error or "")
        assert receiver.snapshot() == []
    finally:
        server.stop()
        receiver.stop()


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.10", False),
        ("172.16.5.4", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00:ec2::254", False),
        ("::ffff:127.0.0.1", False),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_forbidden_addresses(address: str, allowed: bool) -> None:
    assert (forbidden_reason(address) is None) is allowed


def test_guarded_resolver_drops_private_addresses() -> None:
    from aiohttp.abc import AbstractResolver, ResolveResult

    class Fixed(AbstractResolver):
        def __init__(self, hosts: list[str]) -> None:
            self.hosts = hosts

        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            return [
                ResolveResult(hostname=host, host=h, port=port, family=family, proto=0, flags=0)
                for h in self.hosts
            ]

        async def close(self) -> None:
            pass

    mixed = asyncio.run(GuardedResolver(Fixed(["10.0.0.1", "93.184.216.34"])).resolve("x", 80))
    assert [r["host"] for r in mixed] == ["93.184.216.34"]
    with pytest.raises(OSError, match=r"169\.254\.169\.254"):
        asyncio.run(GuardedResolver(Fixed(["169.254.169.254"])).resolve("metadata", 80))
