"""Twilio's REST conventions as the Event Streams API uses them (event-streams-api.md §0, §1.5).

In: form-encoded bodies with PascalCase names (a name may repeat, as ``Types`` does).
Out: JSON with snake_case members, datetimes as ``YYYY-MM-DDTHH:MM:SSZ`` (twilio-python
parses exactly that), and list pages whose ``meta`` comes from ``api.pagination``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from callstream.api.errors import ApiError
from callstream.api.pagination import PageRequest, SortKey, page_meta
from callstream.store.control import Position, Window

# Twilio's code for a missing or malformed parameter.
INVALID_PARAMETER = 20001
# The generic "too large" code the ingest API answers with as well.
TOO_LARGE = 20413
# Control-plane requests are a description and a small JSON document or two; anything much
# larger is a mistake or an attack, and reading it would only cost memory.
MAX_FORM_BYTES = 64 * 1024

_FORM = "application/x-www-form-urlencoded"
_encoder = msgspec.json.Encoder()

T = TypeVar("T")
K = TypeVar("K", str, int)


# -- in ---------------------------------------------------------------------------------------


async def read_form(request: Request) -> QueryParams:
    """The form parameters of a request body (at most MAX_FORM_BYTES, else 413).

    Only a form body carries parameters: Twilio ignores a JSON body (its parameters are then
    "missing"), and so does callstream, so that a request that works here works there.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise ApiError(413, TOO_LARGE, f"Request body exceeds {MAX_FORM_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise ApiError(413, TOO_LARGE, f"Request body exceeds {MAX_FORM_BYTES} bytes")
        chunks.append(chunk)
    media = request.headers.get("content-type", _FORM).split(";", 1)[0].strip().lower()
    if media != _FORM:
        return QueryParams()
    try:
        text = b"".join(chunks).decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, INVALID_PARAMETER, "The request body is not UTF-8 form data") from None
    return QueryParams(pairs)


def missing(name: str, code: int = INVALID_PARAMETER) -> ApiError:
    return ApiError(400, code, f"Missing required parameter {name}", {"parameter": name})


def invalid(name: str, reason: str, code: int = INVALID_PARAMETER) -> ApiError:
    return ApiError(400, code, f"Invalid parameter {name}: {reason}", {"parameter": name})


def required(params: QueryParams, name: str, code: int = INVALID_PARAMETER) -> str:
    value = params.get(name)
    if value is None:
        raise missing(name, code)
    return value


def optional_int(params: QueryParams, name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw.strip())
    except ValueError:
        raise invalid(name, f"{raw!r} is not an integer") from None


def optional_bool(params: QueryParams, name: str) -> bool | None:
    """twilio-python sends booleans as ``true``/``false``."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    text = raw.strip().lower()
    if text not in ("true", "false"):
        raise invalid(name, f"{raw!r} is not true or false")
    return text == "true"


def not_found(code: int, message: str) -> ApiError:
    return ApiError(404, code, message)


# -- out --------------------------------------------------------------------------------------


def json_response(body: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


def no_content() -> Response:
    return Response(status_code=204)


def twilio_time(moment: float | datetime) -> str:
    """``2015-07-30T20:00:00Z``: whole seconds, UTC, as twilio-python's strptime expects."""
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


# -- list pages -------------------------------------------------------------------------------


def _bad_token() -> ApiError:
    return ApiError(400, INVALID_PARAMETER, "PageToken is not a valid page token")


def store_window(page: PageRequest) -> Window:
    """The store window for a page: one row more than asked, to learn if another follows."""
    position: Position | None = None
    if page.key is not None:
        key = page.key
        # A token minted by another list (or edited by hand) has another shape.
        if len(key) != 2 or not isinstance(key[0], int | float) or not isinstance(key[1], str):
            raise _bad_token()
        position = (float(key[0]), key[1])
    if page.direction == "before":
        return Window(limit=page.size + 1, before=position)
    return Window(limit=page.size + 1, after=position)


def trim(rows: Sequence[T], page: PageRequest) -> tuple[list[T], bool]:
    """The rows to show from a window of ``page.size + 1``, and whether a next page exists."""
    if page.direction == "before":
        # Read backwards from the mark: the spare row is the earliest, and the page the
        # client came from follows this one.
        return list(rows[-page.size :]), True
    return list(rows[: page.size]), len(rows) > page.size


def memory_page(
    rows: Sequence[T], sort_key: Callable[[T], K], page: PageRequest, key_type: type[K]
) -> tuple[list[T], bool]:
    """A page of a short list held in memory (the catalogue, a subscription's types)."""
    ordered = sorted(rows, key=sort_key)
    if page.key is None:
        return ordered[: page.size], len(ordered) > page.size
    if len(page.key) != 1 or type(page.key[0]) is not key_type:
        raise _bad_token()
    mark: Any = page.key[0]
    if page.direction == "before":
        return trim([row for row in ordered if sort_key(row) < mark][-(page.size + 1) :], page)
    return trim([row for row in ordered if sort_key(row) > mark], page)


def list_response(
    request: Request,
    base_url: str,
    key: str,
    page: PageRequest,
    items: Sequence[Any],
    *,
    first_key: SortKey | None,
    last_key: SortKey | None,
    has_next: bool,
    filters: dict[str, Any] | None = None,
) -> Response:
    meta = page_meta(
        request,
        base_url,
        key,
        page,
        first_key=first_key,
        last_key=last_key,
        has_next=has_next,
        filters=filters,
    )
    return json_response({key: list(items), "meta": meta})
