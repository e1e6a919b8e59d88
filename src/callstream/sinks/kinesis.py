"""The Kinesis sink driver: assume the sink's IAM role, then PutRecords to its stream.

As Twilio does (event-streams-api.md §3), each sink names a stream ``arn``, a ``role_arn``
and an ``external_id``; callstream calls STS AssumeRole with that ExternalId using its own
AWS credentials (the SDK's usual chain: ``AWS_ACCESS_KEY_ID``... , profiles, instance
roles) and writes with the role's temporary credentials. Those are cached per sink and
renewed ``REFRESH_BEFORE`` seconds before they expire.

Records: one CloudEvent (compact JSON, exactly the bytes a webhook would get) per record,
with PartitionKey = ``data.call_sid`` so every event of one call goes to one shard in the
order callstream writes it; events of no call (the Sink Test event) use their CloudEvent id.
A request is split into PutRecords calls within Kinesis' limits (500 records, 5 MiB; a
record of more than 1 MiB, data plus key, is refused without retry since it can never fit).

PutRecords is not atomic: entries the stream refused (throttled shard, internal failure)
are sent again, and only those, a few times with a short backoff within this call; whole
calls that fail transiently (throttling, 5xx, connection errors) are retried by botocore's
"standard" retry mode. What still fails goes back to the delivery worker with
``Outcome.delivered`` naming what did get through, so the worker retries only the rest.

Endpoints and credentials come from the AWS SDK's own settings (``AWS_ENDPOINT_URL``,
``AWS_ENDPOINT_URL_KINESIS``, ``AWS_ENDPOINT_URL_STS``, ``AWS_ACCESS_KEY_ID``...), so a
local emulator needs no callstream setting. The region is the stream ARN's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import msgspec
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
)

from callstream.sinks.drivers import Outcome
from callstream.sinks.envelope import read_envelope
from callstream.store.control import Sink

if TYPE_CHECKING:
    from types_aiobotocore_kinesis.client import KinesisClient
    from types_aiobotocore_kinesis.type_defs import PutRecordsRequestEntryTypeDef
    from types_aiobotocore_sts.client import STSClient

MAX_RECORDS = 500
"""Records per PutRecords call."""
MAX_REQUEST_BYTES = 5 * 1024 * 1024
"""Data plus partition keys per PutRecords call."""
MAX_RECORD_BYTES = 1024 * 1024
"""Data plus partition key of one record."""
MAX_KEY_CHARS = 256
REFRESH_BEFORE = 300.0
"""Renew assumed-role credentials this many seconds before they expire."""

# Error codes worth another try; any other 4xx (AccessDenied, ResourceNotFound,
# InvalidArgument, KMS configuration errors...) needs the customer to fix something first.
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "KMSThrottlingException",
        "LimitExceededException",
        "InternalFailure",
        "InternalFailureException",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "ExpiredTokenException",
        "ExpiredToken",
        "IDPCommunicationError",
    }
)
_EXPIRED = frozenset({"ExpiredTokenException", "ExpiredToken"})

# Twilio's Kinesis error codes (event-streams-api.md §2.3, "older codes").
WRITE_ERROR = 93101
ASSUME_ROLE_ERROR = 93102
STREAM_ERROR = 93104

_STREAM_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):kinesis:(?P<region>[a-z0-9-]+):(?P<account>[0-9]+):"
    r"stream/(?P<name>[A-Za-z0-9_.-]{1,128})"
)


class Stream(NamedTuple):
    arn: str
    region: str
    name: str


def parse_stream_arn(arn: str) -> Stream:
    """The stream and region a Kinesis stream ARN names; ``ValueError`` when it names none."""
    match = _STREAM_ARN.fullmatch(arn)
    if match is None:
        raise ValueError(f"{arn!r} is not a Kinesis stream ARN")
    return Stream(arn=arn, region=match["region"], name=match["name"])


def partition_key(event: bytes) -> str:
    """The call the event belongs to (its CloudEvent id when it belongs to none)."""
    # Kinesis refuses an empty key; an event without an id still has to go somewhere.
    return read_envelope(event).subject[:MAX_KEY_CHARS] or "-"


@dataclasses.dataclass(frozen=True)
class _Entry:
    index: int
    """Into the request's events."""
    data: bytes
    key: str

    @property
    def size(self) -> int:
        return len(self.data) + len(self.key.encode("utf-8"))


def batches(entries: Sequence[_Entry]) -> list[list[_Entry]]:
    """``entries`` in order, cut into PutRecords calls within the count and size limits."""
    out: list[list[_Entry]] = []
    current: list[_Entry] = []
    size = 0
    for entry in entries:
        if current and (len(current) == MAX_RECORDS or size + entry.size > MAX_REQUEST_BYTES):
            out.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry.size
    if current:
        out.append(current)
    return out


class _Failure(NamedTuple):
    retry: bool
    error: str
    status: int | None = None


class _CannotWrite(Exception):
    def __init__(self, failure: _Failure) -> None:
        super().__init__(failure.error)
        self.failure = failure


def _client_failure(exc: ClientError, what: str, code_number: int) -> _Failure:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    retry = code in RETRYABLE_CODES or status is None or status >= 500 or status == 429
    return _Failure(retry, f"{what}: {code}: {message} ({code_number})", status)


def _transport_failure(exc: BotoCoreError, what: str, code_number: int) -> _Failure:
    if isinstance(exc, NoCredentialsError):
        # Retried: the queue keeps the events until the operator gives callstream credentials.
        return _Failure(
            True,
            f"{what}: callstream has no AWS credentials to assume the sink's role with "
            f"(set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile) ({code_number})",
        )
    # A value the SDK refuses to send (say an external_id shorter than STS allows) stays
    # wrong however often it is tried.
    retry = not isinstance(exc, ParamValidationError)
    return _Failure(retry, f"{what}: {type(exc).__name__}: {exc} ({code_number})")


@dataclasses.dataclass
class _Writer:
    """A Kinesis client signing with one sink's assumed-role credentials."""

    key: tuple[str, str, str]
    client: KinesisClient
    stack: contextlib.AsyncExitStack
    refresh_at: float
    users: int = 0
    retired: bool = False


class KinesisDriver:
    """The ``SinkDriver`` for ``kinesis`` sinks; one instance serves every sink."""

    def __init__(
        self,
        *,
        session: AioSession | None = None,
        timeout: float = 5.0,
        attempts: int = 3,
        partial_retries: int = 3,
        partial_backoff: float = 0.05,
        sts_endpoint_url: str | None = None,
        kinesis_endpoint_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session or get_session()
        # botocore retries whole calls that fail transiently (throttling, 5xx, connection)
        # with its own backoff; ``attempts`` counts the first try.
        self._config = AioConfig(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"mode": "standard", "total_max_attempts": attempts},
        )
        self._partial_retries = partial_retries
        self._partial_backoff = partial_backoff
        self._sts_endpoint_url = sts_endpoint_url
        self._kinesis_endpoint_url = kinesis_endpoint_url
        self._clock = clock
        self._stack = contextlib.AsyncExitStack()
        self._sts: dict[str, STSClient] = {}
        self._sts_lock = asyncio.Lock()
        self._writers: dict[str, _Writer] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.assumed = 0
        """AssumeRole calls made (tests and metrics read it)."""

    @property
    def cached_sinks(self) -> frozenset[str]:
        """The sinks whose assumed-role credentials (and client) are held."""
        return frozenset(self._writers)

    async def close(self) -> None:
        for writer in list(self._writers.values()):
            await writer.stack.aclose()
        self._writers.clear()
        await self._stack.aclose()
        self._sts.clear()

    # -- credentials -------------------------------------------------------------------------

    async def _sts_client(self, region: str) -> STSClient:
        async with self._sts_lock:
            client = self._sts.get(region)
            if client is None:
                client = await self._stack.enter_async_context(
                    self._session.create_client(
                        "sts",
                        region_name=region,
                        endpoint_url=self._sts_endpoint_url,
                        config=self._config,
                    )
                )
                self._sts[region] = client
            return client

    async def _assume(self, sink: Sink, stream: Stream, key: tuple[str, str, str]) -> _Writer:
        role_arn, external_id, _ = key
        what = f"could not assume role {role_arn}"
        try:
            sts = await self._sts_client(stream.region)
            response = await sts.assume_role(
                RoleArn=role_arn,
                RoleSessionName=f"callstream-{sink.sid}"[:64],
                ExternalId=external_id,
            )
        except ClientError as exc:
            raise _CannotWrite(_client_failure(exc, what, ASSUME_ROLE_ERROR)) from exc
        except BotoCoreError as exc:
            raise _CannotWrite(_transport_failure(exc, what, ASSUME_ROLE_ERROR)) from exc
        self.assumed += 1
        credentials = response["Credentials"]
        now = self._clock()
        expires = credentials["Expiration"].timestamp()
        # Short-lived credentials are renewed at half their life rather than never used.
        refresh_at = expires - min(REFRESH_BEFORE, max(0.0, expires - now) / 2)
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(
            self._session.create_client(
                "kinesis",
                region_name=stream.region,
                endpoint_url=self._kinesis_endpoint_url,
                aws_access_key_id=credentials["AccessKeyId"],
                aws_secret_access_key=credentials["SecretAccessKey"],
                aws_session_token=credentials["SessionToken"],
                config=self._config,
            )
        )
        return _Writer(key=key, client=client, stack=stack, refresh_at=refresh_at)

    async def _writer(self, sink: Sink, stream: Stream) -> _Writer:
        config = sink.configuration
        key = (str(config.get("role_arn", "")), str(config.get("external_id", "")), stream.region)
        lock = self._locks.setdefault(sink.sid, asyncio.Lock())
        async with lock:  # one AssumeRole per sink at a time, however many requests wait
            writer = self._writers.get(sink.sid)
            if writer is not None and writer.key == key and self._clock() < writer.refresh_at:
                return writer
            fresh = await self._assume(sink, stream, key)
            self._writers[sink.sid] = fresh
            if writer is not None:
                writer.retired = True
                await self._release(writer, used=False)
            await self._evict_idle(keep=sink.sid)
            return fresh

    async def _evict_idle(self, keep: str) -> None:
        """Close the clients of sinks that sent nothing while their credentials aged (deleted
        sinks among them); a sink that sends again assumes its role again."""
        now = self._clock()
        idle = [
            sid
            for sid, writer in self._writers.items()
            if sid != keep and writer.refresh_at <= now and writer.users == 0
        ]
        for sid in idle:
            writer = self._writers.pop(sid)
            writer.retired = True
            await writer.stack.aclose()

    async def _release(self, writer: _Writer, *, used: bool = True) -> None:
        if used:
            writer.users -= 1
        if writer.retired and writer.users == 0:
            await writer.stack.aclose()  # requests in flight finish on the old client first

    # -- writing -----------------------------------------------------------------------------

    async def send(self, sink: Sink, auth_token: str, events: Sequence[bytes]) -> Outcome:
        """The ``SinkDriver`` entry point (``auth_token`` is not used by Kinesis)."""
        try:
            stream = parse_stream_arn(str(sink.configuration.get("arn", "")))
        except ValueError as exc:
            return Outcome(ok=False, retry=False, error=f"{exc} ({STREAM_ERROR})")
        entries: list[_Entry] = []
        refused: list[str] = []
        for index, body in enumerate(events):
            try:
                entry = _Entry(index, body, partition_key(body))
            except msgspec.DecodeError:
                refused.append(f"event {index} is not a CloudEvent")
                continue
            if entry.size > MAX_RECORD_BYTES:
                refused.append(
                    f"event {index} is {entry.size} bytes with its partition key; "
                    f"a Kinesis record holds at most {MAX_RECORD_BYTES}"
                )
                continue
            entries.append(entry)

        delivered: list[int] = []
        failure: _Failure | None = None
        if entries:
            try:
                writer = await self._writer(sink, stream)
            except _CannotWrite as exc:
                cause = exc.failure
                return Outcome(ok=False, retry=cause.retry, status=cause.status, error=cause.error)
            writer.users += 1
            try:
                for batch in batches(entries):
                    ok, failure = await self._put(writer, stream, batch)
                    delivered += ok
                    if failure is not None:
                        break  # the stream is in trouble: the rest would only reorder a call
            finally:
                await self._release(writer)

        if failure is None and not refused:
            return Outcome(ok=True, retry=False, status=200)
        errors = [failure.error] if failure is not None else []
        if refused:
            errors.append("refused without retry: " + "; ".join(refused))
        return Outcome(
            ok=False,
            # An oversized event left alone in a retry is dead-lettered then.
            retry=failure is not None and failure.retry,
            status=failure.status if failure is not None else None,
            error=" | ".join(errors),
            delivered=tuple(sorted(delivered)),
        )

    async def _put(
        self, writer: _Writer, stream: Stream, batch: list[_Entry]
    ) -> tuple[list[int], _Failure | None]:
        """One PutRecords of ``batch``, then again of the entries it refused, a few times."""
        delivered: list[int] = []
        pending = batch
        last = ""
        for attempt in range(self._partial_retries + 1):
            if attempt:
                await asyncio.sleep(self._partial_backoff * 2 ** (attempt - 1))
            records: list[PutRecordsRequestEntryTypeDef] = [
                {"Data": e.data, "PartitionKey": e.key} for e in pending
            ]
            what = f"PutRecords to {stream.name} failed"
            try:
                response = await writer.client.put_records(StreamARN=stream.arn, Records=records)
            except ClientError as exc:
                failure = _client_failure(exc, what, WRITE_ERROR)
                if exc.response.get("Error", {}).get("Code", "") in _EXPIRED:
                    writer.refresh_at = 0.0  # assume the role again on the next request
                return delivered, failure
            except BotoCoreError as exc:
                return delivered, _transport_failure(exc, what, WRITE_ERROR)
            retry: list[_Entry] = []
            final: list[str] = []
            for entry, result in zip(pending, response["Records"], strict=True):
                rejected = result.get("ErrorCode")
                if rejected is None:
                    delivered.append(entry.index)
                elif rejected in RETRYABLE_CODES:
                    retry.append(entry)
                    last = f"{rejected}: {result.get('ErrorMessage', '')}"
                else:
                    final.append(f"{rejected}: {result.get('ErrorMessage', '')}")
            if final:
                error = f"Kinesis refused {len(final)} record(s): {final[0]} ({WRITE_ERROR})"
                return delivered, _Failure(bool(retry), error, 200)
            if not retry:
                return delivered, None
            pending = retry
        error = (
            f"Kinesis refused {len(pending)} of {len(batch)} record(s) "
            f"{self._partial_retries + 1} times: {last} ({WRITE_ERROR})"
        )
        return delivered, _Failure(True, error, 200)
