"""The ingest API: batches of telemetry in, durably appended before 202.

``POST /v1/Telemetry`` takes a JSON array (``application/json``) or one record per
line (``application/x-ndjson``) of the four telemetry kinds (docs/ingest.md).
A batch is all or nothing: one bad record rejects the request with a 400 that
names every bad record, and nothing of it is stored. A record sent again (same
idempotency id) is stored again but applied once: the engine remembers the ids
each call has applied (docs/decisions/0004-telemetry-chunks.md).
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from callstream.api.auth import require_account
from callstream.api.errors import ApiError
from callstream.model.telemetry import TelemetryError, TelemetryRecord, decode_batch, decode_ndjson
from callstream.store.interfaces import AccountStore, TelemetryChunk, TelemetryLog, partition_of

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_RECORDS = 10_000

# Twilio's generic codes for a bad request and for a body that is too large.
INVALID_REQUEST = 20001
TOO_LARGE = 20413

_encoder = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


class IngestResult(msgspec.Struct, frozen=True):
    accepted: int


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, TOO_LARGE, f"Request body exceeds {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, TOO_LARGE, f"Request body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _is_ndjson(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in {"application/x-ndjson", "application/ndjson", "application/jsonl"}


class IngestRoutes:
    """Bound to the stores it writes to, so the routes hold no global state."""

    def __init__(self, accounts: AccountStore, log: TelemetryLog) -> None:
        self._accounts = accounts
        self._log = log

    async def telemetry(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        body = await _read_body(request)
        ndjson = _is_ndjson(request.headers.get("content-type", ""))
        try:
            records = decode_ndjson(body) if ndjson else decode_batch(body)
        except TelemetryError as exc:
            bad = [
                {"index": index, "field": field, "reason": reason}
                for index, field, reason in exc.errors
            ]
            raise ApiError(
                400,
                INVALID_REQUEST,
                f"{len(bad)} invalid record(s); nothing was stored",
                {"errors": bad},
            ) from None
        if len(records) > MAX_RECORDS:
            raise ApiError(413, TOO_LARGE, f"A batch may hold at most {MAX_RECORDS} records")
        if records:
            await self._log.append(account.sid, self._chunks(records))
        payload = IngestResult(accepted=len(records))
        return Response(_encoder.encode(payload), status_code=202, media_type="application/json")

    def _chunks(self, records: list[TelemetryRecord]) -> list[TelemetryChunk]:
        partitions = self._log.partitions
        groups: dict[int, list[TelemetryRecord]] = {}
        for record in records:
            groups.setdefault(partition_of(record.call_sid, partitions), []).append(record)
        return [
            TelemetryChunk(partition, len(group), _msgpack.encode(group))
            for partition, group in groups.items()
        ]
