"""Errors in Twilio's JSON shape (event-streams-api.md §1.6).

``{"code", "message", "more_info", "status"}`` is what twilio-python turns into a
TwilioRestException; ``details`` carries machine-readable specifics.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """An error to answer with; raised anywhere below a route."""

    def __init__(
        self, status: int, code: int, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_body(
    status: int, code: int, message: str, details: dict[str, Any] | None = None
) -> bytes:
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    if details is not None:
        body["details"] = details
    return _encoder.encode(body)


def error_response(error: ApiError) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="callstream"'} if error.status == 401 else None
    return Response(
        error_body(error.status, error.code, error.message, error.details),
        status_code=error.status,
        media_type="application/json",
        headers=headers,
    )
