"""Twilio-style pagination: ``PageSize``, ``Page``, ``PageToken`` in; ``meta`` out.

twilio-python follows ``meta.next_page_url`` as an absolute URL, so every URL in
``meta`` points at callstream itself (PUBLIC_URL) and carries what it needs. The
page token is opaque to clients; inside it is a keyset position (the sort key of
the last row of the page for "next", of the first row for "previous"), so paging
returns each record once even while new records are being written.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import msgspec
from starlette.requests import Request

from callstream.api.errors import ApiError

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
INVALID_PARAMETER = 20001

SortKey = list[str | int | float]


class _Token(msgspec.Struct, frozen=True):
    direction: Literal["after", "before"]
    key: SortKey


@dataclass(frozen=True)
class PageRequest:
    size: int
    number: int
    direction: Literal["after", "before"] | None
    key: SortKey | None


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, INVALID_PARAMETER, f"{name} must be an integer, not {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, INVALID_PARAMETER, f"{name} must be between {low} and {high}")
    return value


def encode_token(direction: Literal["after", "before"], key: SortKey) -> str:
    raw = msgspec.json.encode(_Token(direction, key))
    return "PT" + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_token(token: str) -> _Token:
    try:
        if not token.startswith("PT"):
            raise ValueError(token)
        body = token[2:]
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return msgspec.json.decode(raw, type=_Token)
    except (ValueError, binascii.Error, msgspec.DecodeError):
        raise ApiError(400, INVALID_PARAMETER, "PageToken is not a valid page token") from None


def read_page(request: Request) -> PageRequest:
    """The page a list request asks for (400 naming the parameter when it is bad)."""
    size = _int(request, "PageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    number = _int(request, "Page", 0, 0, 2**31)
    token = request.query_params.get("PageToken")
    if token:
        parsed = _decode_token(token)
        return PageRequest(size, number, parsed.direction, parsed.key)
    return PageRequest(size, number, None, None)


def page_meta(
    request: Request,
    base_url: str,
    key: str,
    page: PageRequest,
    *,
    first_key: SortKey | None,
    last_key: SortKey | None,
    has_next: bool,
    filters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``meta`` object of one page.

    ``first_key``/``last_key`` are the sort keys of the first and last rows on the
    page; ``filters`` are the list's own query parameters, repeated in every URL.
    """
    path = f"{base_url}{request.url.path}"
    params = {k: v for k, v in (filters or {}).items() if v is not None}

    def url(**extra: Any) -> str:
        query = urlencode({**params, "PageSize": page.size, **extra}, doseq=True)
        return f"{path}?{query}"

    has_previous = page.number > 0 and first_key is not None
    current = {"Page": page.number}
    if page.direction is not None and page.key is not None:
        current["PageToken"] = encode_token(page.direction, page.key)  # type: ignore[assignment]
    return {
        "page": page.number,
        "page_size": page.size,
        "first_page_url": url(Page=0),
        "previous_page_url": (
            url(Page=page.number - 1, PageToken=encode_token("before", first_key))
            if has_previous and first_key is not None
            else None
        ),
        "url": url(**current),
        "next_page_url": (
            url(Page=page.number + 1, PageToken=encode_token("after", last_key))
            if has_next and last_key is not None
            else None
        ),
        "key": key,
    }
