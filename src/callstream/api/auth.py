"""HTTP Basic authentication of every request against the account store."""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request

from callstream.accounts import authenticate
from callstream.api.errors import ApiError
from callstream.store.interfaces import Account, AccountStore

# Twilio's code for a failed authentication.
AUTH_ERROR = 20003


def _credentials(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise ApiError(401, AUTH_ERROR, "Authenticate: HTTP Basic credentials are required")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(401, AUTH_ERROR, "Authenticate: malformed Basic credentials") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise ApiError(401, AUTH_ERROR, "Authenticate: malformed Basic credentials")
    return username, password


async def require_account(request: Request, store: AccountStore) -> Account:
    """The account the request authenticates as; 401 otherwise."""
    username, password = _credentials(request)
    account = await authenticate(store, username, password)
    if account is None:
        raise ApiError(401, AUTH_ERROR, "Authentication Error - invalid username or password")
    return account
