"""The Kinesis driver against moto (a real Kinesis/STS API over HTTP), with a fault-injecting
proxy in front of it for the faults moto cannot produce.

moto never fails part of a PutRecords call (its ``FailedRecordCount`` is always 0) and never
throttles, so ``FaultProxy`` stands between the driver and moto: it forwards every request,
and for the PutRecords calls a test picks it answers for some records itself with the error
code AWS would send (ProvisionedThroughputExceededException, ...), forwards only the others
to moto, and splices both into one response. Everything else (signing, STS AssumeRole with
its ExternalId, the records that do get through) is moto's, so the stream's content is real.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import msgspec
import pytest
from aiohttp import web

from callstream.sinks.kinesis import (
    MAX_RECORD_BYTES,
    MAX_RECORDS,
    MAX_REQUEST_BYTES,
    REFRESH_BEFORE,
    KinesisDriver,
    parse_stream_arn,
    partition_key,
)
from callstream.store.control import Sink
from tests.integration.moto_server import ACCOUNT, MotoServer, read_stream
from tests.integration.server import free_port

PUT_RECORDS = "Kinesis_20131202.PutRecords"
THROTTLED = "ProvisionedThroughputExceededException"
# (status, error code) for a whole call, or {record index in the call: error code}, or None.
Fault = tuple[int, str] | dict[int, str] | None


@dataclass
class Call:
    target: str
    body: bytes
    access_key: str

    @property
    def records(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = json.loads(self.body)["Records"]
        return records

    @property
    def keys(self) -> list[str]:
        return [r["PartitionKey"] for r in self.records]


@dataclass
class FaultProxy:
    """Forwards to moto; ``fault(n, call)`` decides what happens to the n-th PutRecords."""

    upstream: str
    fault: Callable[[int, Call], Fault] = lambda n, call: None
    calls: list[Call] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _runner: web.AppRunner | None = None
    _client: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def puts(self) -> list[Call]:
        return [c for c in self.calls if c.target == PUT_RECORDS]

    @property
    def assume_role_params(self) -> list[dict[str, list[str]]]:
        forms = [parse_qs(c.body.decode()) for c in self.calls if not c.target]
        return [f for f in forms if f.get("Action") == ["AssumeRole"]]

    async def start(self) -> FaultProxy:
        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._client = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        assert self._runner is not None and self._client is not None
        await self._client.close()
        await self._runner.cleanup()

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, bytes, str]:
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        async with self._client.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as response:
            return response.status, await response.read(), response.content_type

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        credential = re.search(r"Credential=([^/]+)/", request.headers.get("Authorization", ""))
        call = Call(
            request.headers.get("X-Amz-Target", ""), body, credential[1] if credential else ""
        )
        self.calls.append(call)
        fault = self.fault(len(self.puts) - 1, call) if call.target == PUT_RECORDS else None
        if isinstance(fault, tuple):
            status, code = fault
            error = {"__type": code, "message": "injected by the test's fault proxy"}
            return web.json_response(
                error, status=status, content_type="application/x-amz-json-1.1"
            )
        if isinstance(fault, dict):
            return await self._partial(request, call, fault)
        status, payload, content_type = await self._forward(request, body)
        return web.Response(status=status, body=payload, content_type=content_type)

    async def _partial(
        self, request: web.Request, call: Call, failing: dict[int, str]
    ) -> web.Response:
        document = json.loads(call.body)
        passing = [r for i, r in enumerate(document["Records"]) if i not in failing]
        results: list[dict[str, Any]] = []
        if passing:
            forwarded = json.dumps({**document, "Records": passing}).encode()
            status, payload, _ = await self._forward(request, forwarded)
            assert status == 200, payload
            results = json.loads(payload)["Records"]
        merged = []
        for i in range(len(document["Records"])):
            if i in failing:
                merged.append({"ErrorCode": failing[i], "ErrorMessage": "injected"})
            else:
                merged.append(results.pop(0))
        answer = {"FailedRecordCount": len(failing), "Records": merged}
        return web.json_response(answer, content_type="application/x-amz-json-1.1")


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in moto.aws_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # each test points the driver at what it wants


def kinesis_sink(arn: str, external_id: str = "ext-1234") -> Sink:
    return Sink(
        sid="DG" + "1" * 32,
        account_sid="AC" + "2" * 32,
        description="kinesis",
        sink_type="kinesis",
        configuration={
            "arn": arn,
            "role_arn": f"arn:aws:iam::{ACCOUNT}:role/callstream-writer",
            "external_id": external_id,
        },
        status="active",
        date_created=0.0,
        date_updated=0.0,
    )


def event(n: int, call_sid: str | None = None, pad: int = 0) -> bytes:
    data: dict[str, Any] = {"n": n, "pad": "x" * pad}
    if call_sid is not None:
        data["call_sid"] = call_sid
    envelope = {"specversion": "1.0", "type": "t", "source": "s", "id": f"EZ{n:032x}", "data": data}
    return json.dumps(envelope, separators=(",", ":")).encode()


def stored_ids(moto: MotoServer, arn: str) -> list[str]:
    return [json.loads(r.data)["id"] for r in read_stream(moto, arn)]


def run(
    moto: MotoServer,
    scenario: Callable[[FaultProxy, KinesisDriver], Awaitable[None]],
    fault: Callable[[int, Call], Fault] = lambda n, call: None,
    **driver: Any,
) -> FaultProxy:
    async def main() -> FaultProxy:
        proxy = await FaultProxy(moto.url, fault).start()
        kinesis = KinesisDriver(
            kinesis_endpoint_url=proxy.url,
            sts_endpoint_url=proxy.url,
            partial_backoff=0.01,
            **driver,
        )
        try:
            await scenario(proxy, kinesis)
        finally:
            await kinesis.close()
            await proxy.stop()
        return proxy

    return asyncio.run(main())


def test_partition_key_is_the_call_or_the_event_id() -> None:
    assert partition_key(event(1, "CA" + "a" * 32)) == "CA" + "a" * 32
    assert partition_key(event(2)) == f"EZ{2:032x}"  # the Sink Test event has no call
    stringly = b'{"id":"EZ9","type":"t","data":"{\\"call_sid\\":\\"CA1\\"}"}'
    assert partition_key(stringly) == "EZ9"  # data as a JSON string: no call to read
    assert parse_stream_arn("arn:aws:kinesis:eu-west-2:111111111:stream/s-1").region == "eu-west-2"
    with pytest.raises(ValueError):
        parse_stream_arn("arn:aws:sqs:eu-west-2:111111111:queue")


def test_every_event_is_one_record_keyed_by_its_call(moto: MotoServer) -> None:
    arn = moto.create_stream(shards=2)
    events = [event(i, f"CA{i % 7:032d}") for i in range(1200)]

    async def scenario(proxy: FaultProxy, kinesis: KinesisDriver) -> None:
        outcome = await kinesis.send(kinesis_sink(arn), "", events)
        assert outcome.ok and outcome.status == 200

    proxy = run(moto, scenario)
    # 1200 records: three calls of at most 500, in order.
    assert [len(c.records) for c in proxy.puts] == [500, 500, 200]
    records = read_stream(moto, arn)
    assert sorted(json.loads(r.data)["id"] for r in records) == sorted(
        json.loads(e)["id"] for e in events
    )
    shards_of_call: dict[str, set[str]] = {}
    for record in records:
        assert record.key == json.loads(record.data)["data"]["call_sid"]
        shards_of_call.setdefault(record.key, set()).add(record.shard)
    assert all(len(shards) == 1 for shards in shards_of_call.values())
    assert len({r.shard for r in records}) == 2  # seven calls spread over both shards
    for shard in {r.shard for r in records}:
        in_shard = [json.loads(r.data)["data"]["n"] for r in records if r.shard == shard]
        assert in_shard == sorted(in_shard)  # written in queue order


def test_requests_stay_under_five_mebibytes_and_oversized_events_are_refused(
    moto: MotoServer,
) -> None:
    arn = moto.create_stream(shards=1)
    big = 600 * 1024
    events = [event(i, "CA1", pad=big) for i in range(12)]
    events.insert(5, event(99, "CA1", pad=MAX_RECORD_BYTES))  # can never be a record

    async def scenario(proxy: FaultProxy, kinesis: KinesisDriver) -> None:
        outcome = await kinesis.send(kinesis_sink(arn), "", events)
        assert not outcome.ok and not outcome.retry  # nothing to gain from trying again
        assert outcome.delivered == tuple(i for i in range(13) if i != 5)
        assert "event 5 is" in (outcome.error or "") and str(MAX_RECORD_BYTES) in (
            outcome.error or ""
        )

    proxy = run(moto, scenario)
    assert len(proxy.puts) == 2
    for call in proxy.puts:
        size = sum(len(r["PartitionKey"]) + len(r["Data"]) * 3 // 4 for r in call.records)
        assert size <= MAX_REQUEST_BYTES and len(call.records) <= MAX_RECORDS
    assert f"EZ{99:032x}" not in stored_ids(moto, arn)
    assert len(stored_ids(moto, arn)) == 12


def test_only_the_refused_entries_are_sent_again(moto: MotoServer) -> None:
    arn = moto.create_stream(shards=2)
    events = [event(i, f"CA{i}") for i in range(6)]

    def fault(n: int, call: Call) -> Fault:
        # The first call: entries 1 and 3 throttled, as a busy shard answers.
        return {1: THROTTLED, 3: "InternalFailure"} if n == 0 else None

    async def scenario(proxy: FaultProxy, kinesis: KinesisDriver) -> None:
        outcome = await kinesis.send(kinesis_sink(arn), "", events)
        assert outcome.ok

    proxy = run(moto, scenario, fault)
    assert [c.keys for c in proxy.puts] == [[f"CA{i}" for i in range(6)], ["CA1", "CA3"]]
    assert sorted(stored_ids(moto, arn)) == sorted(json.loads(e)["id"] for e in events)


def test_entries_still_refused_are_left_to_the_worker_with_what_was_delivered(
    moto: MotoServer,
) -> None:
    arn = moto.create_stream(shards=2)
    events = [event(i, "CA-hot" if i in (2, 4) else f"CA{i}") for i in range(6)]

    def fault(n: int, call: Call) -> Fault:
        return {i: THROTTLED for i, key in enumerate(call.keys) if key == "CA-hot"}

    async def scenario(proxy: FaultProxy, kinesis: KinesisDriver) -> None:
        outcome = await kinesis.send(kinesis_sink(arn), "", events)
        assert not outcome.ok and outcome.retry
        assert outcome.delivered == (0, 1, 3, 5)
        assert THROTTLED in (outcome.error or "") and "2 of 6" in (outcome.error or "")

    proxy = run(moto, scenario, fault, partial_retries=2)
    assert [len(c.records) for c in proxy.puts] == [6, 2, 2]  # the first try and 2 retries
    assert sorted(stored_ids(moto, arn)) == sorted(
        json.loads(events[i])["id"] for i in (0, 1, 3, 5)
    )


def test_a_throttled_call_is_retried_and_then_handed_back(moto: MotoServer) -> None:
    arn = moto.create_stream(shards=1)

    async def scenario(proxy: FaultProxy, kinesis: KinesisDriver) -> None:
        # Throttled once: botocore's retry sends it again and it goes through.
        assert (await kinesis.send(kinesis_sink(arn), "", [event(1, "CA1")])).ok
        assert len(proxy.puts) == 2
        # Throttled every time: retryable, after ``attempts`` tries.
        outcome = await kinesis.send(kinesis_sink(arn), "", [event(2, "CA1")])
        assert not outcome.ok and outcome.retry and outcome.status == 400
        assert THROTTLED in (outcome.error or "") and "93101" in (outcome.error or "")
        assert len(proxy.puts) == 4

    proxy = run(moto, scenario, lambda n, call: (400, THROTTLED) if n != 1 else None, attempts=2)
    assert stored_ids(moto, arn) == [f"EZ{1:032x}"]
    assert proxy.puts[0].body == proxy.puts[1].body


@pytest.mark.parametrize(
    ("status", "code", "retry"),
    [
        (500, "InternalFailure", True),
        (503, "ServiceUnavailable", True),
        (400, "AccessDeniedException", False),
        (400, "InvalidArgumentException", False),
        (400, "KMSAccessDeniedException", False),
    ],
)
def test_errors_are_classified(moto: MotoServer, status: int, code: str, retry: bool) -> None:
    arn = moto.create_stream(shards=1)

    async def scenario(proxy: FaultProxy, kinesis: KinesisDriver) -> None:
        outcome = await kinesis.send(kinesis_sink(arn), "", [event(1, "CA1")])
        assert not outcome.ok and outcome.retry is retry and code in (outcome.error or "")
        assert outcome.delivered == ()

    proxy = run(moto, scenario, lambda n, call: (status, code), attempts=1)
    assert len(proxy.puts) == 1


def test_a_missing_stream_is_not_retried(moto: MotoServer) -> None:
    missing = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/no-such-stream"

    async def scenario(proxy: FaultProxy, kinesis: KinesisDriver) -> None:
        outcome = await kinesis.send(kinesis_sink(missing), "", [event(1, "CA1")])
        assert not outcome.ok and not outcome.retry  # moto's own ResourceNotFoundException
        assert "ResourceNotFoundException" in (outcome.error or "")

    run(moto, scenario)


def test_no_connection_is_retryable(moto: MotoServer) -> None:
    arn = moto.create_stream(shards=1)

    async def main() -> None:
        kinesis = KinesisDriver(
            kinesis_endpoint_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
            sts_endpoint_url=moto.url,
            attempts=1,
        )
        try:
            outcome = await kinesis.send(kinesis_sink(arn), "", [event(1, "CA1")])
        finally:
            await kinesis.close()
        assert not outcome.ok and outcome.retry and outcome.status is None
        assert "EndpointConnectionError" in (outcome.error or "")

    asyncio.run(main())


def test_credentials_are_assumed_with_the_external_id_cached_and_renewed(
    moto: MotoServer,
) -> None:
    arn = moto.create_stream(shards=1)
    offset = {"seconds": 0.0}
    sink = kinesis_sink(arn, external_id="the-external-id")

    def clock() -> float:
        return datetime.now().timestamp() + offset["seconds"]

    expired_once = {"done": False}

    def fault(n: int, call: Call) -> Fault:
        if n == 5 and not expired_once["done"]:
            expired_once["done"] = True
            return (400, "ExpiredTokenException")
        return None

    async def scenario(proxy: FaultProxy, kinesis: KinesisDriver) -> None:
        for n in range(3):
            assert (await kinesis.send(sink, "", [event(n, "CA1")])).ok
        assert kinesis.assumed == 1  # cached across requests
        (params,) = proxy.assume_role_params
        assert params["RoleArn"] == [sink.configuration["role_arn"]]
        assert params["ExternalId"] == ["the-external-id"]
        first_key = proxy.puts[-1].access_key
        # Moto's credentials last an hour: renewed REFRESH_BEFORE seconds before they expire.
        offset["seconds"] = 3600 - REFRESH_BEFORE - 30
        assert (await kinesis.send(sink, "", [event(3, "CA1")])).ok
        assert kinesis.assumed == 1
        offset["seconds"] = 3600 - REFRESH_BEFORE + 30
        assert (await kinesis.send(sink, "", [event(4, "CA1")])).ok
        assert kinesis.assumed == 2
        assert proxy.puts[-1].access_key != first_key
        # Kinesis saying the token expired (clock skew) makes the next request assume again.
        outcome = await kinesis.send(sink, "", [event(5, "CA1")])
        assert not outcome.ok and outcome.retry
        assert (await kinesis.send(sink, "", [event(5, "CA1")])).ok
        assert kinesis.assumed == 3

    run(moto, scenario, fault, attempts=1, clock=clock)
    assert len(stored_ids(moto, arn)) == 6


def test_idle_sinks_are_let_go_when_their_credentials_age(moto: MotoServer) -> None:
    arn = moto.create_stream(shards=1)
    offset = {"seconds": 0.0}
    sink = kinesis_sink(arn)
    other = msgspec.structs.replace(sink, sid="DG" + "9" * 32)

    async def scenario(proxy: FaultProxy, kinesis: KinesisDriver) -> None:
        assert (await kinesis.send(sink, "", [event(1, "CA1")])).ok
        assert (await kinesis.send(other, "", [event(2, "CA2")])).ok
        assert kinesis.cached_sinks == {sink.sid, other.sid}
        # Both due for renewal; only ``other`` sends (``sink`` was deleted, say).
        offset["seconds"] = 3600 - REFRESH_BEFORE + 30
        assert (await kinesis.send(other, "", [event(3, "CA2")])).ok
        assert kinesis.cached_sinks == {other.sid}
        assert (await kinesis.send(sink, "", [event(4, "CA1")])).ok  # comes back when needed
        assert kinesis.assumed == 4

    run(moto, scenario, clock=lambda: datetime.now().timestamp() + offset["seconds"])
    assert len(stored_ids(moto, arn)) == 4


def test_an_external_id_sts_cannot_take_is_not_retried(moto: MotoServer) -> None:
    arn = moto.create_stream(shards=1)

    async def scenario(proxy: FaultProxy, kinesis: KinesisDriver) -> None:
        outcome = await kinesis.send(kinesis_sink(arn, external_id="x"), "", [event(1, "CA1")])
        assert not outcome.ok and not outcome.retry
        assert "ExternalId" in (outcome.error or "") and "93102" in (outcome.error or "")

    proxy = run(moto, scenario)
    assert proxy.calls == []  # refused before anything was sent
