"""Accounts: who may send telemetry and own sinks, and how they prove it."""

from __future__ import annotations

import hmac
import re
import secrets
import time
import uuid

from callstream.store.interfaces import Account, AccountStore, ApiKey

ACCOUNT_SID = re.compile(r"^AC[0-9a-f]{32}$")
API_KEY_SID = re.compile(r"^SK[0-9a-f]{32}$")


class AccountError(ValueError):
    """An account cannot be created as asked; the message says why."""


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def new_secret() -> str:
    return secrets.token_hex(16)


async def create_account(
    store: AccountStore,
    *,
    friendly_name: str = "",
    sid: str | None = None,
    auth_token: str | None = None,
) -> Account:
    sid = sid or new_sid("AC")
    if not ACCOUNT_SID.match(sid):
        raise AccountError(f"account SID must be AC followed by 32 lower-case hex digits: {sid!r}")
    if auth_token is not None and len(auth_token) < 16:
        raise AccountError("auth token must be at least 16 characters")
    if await store.get_account(sid) is not None:
        raise AccountError(f"account {sid} already exists")
    account = Account(
        sid=sid,
        auth_token=auth_token or new_secret(),
        friendly_name=friendly_name or f"Account {sid[-6:]}",
        date_created=time.time(),
    )
    await store.create_account(account)
    return account


async def create_api_key(store: AccountStore, account_sid: str, friendly_name: str = "") -> ApiKey:
    if await store.get_account(account_sid) is None:
        raise AccountError(f"no account {account_sid}")
    key = ApiKey(
        sid=new_sid("SK"),
        account_sid=account_sid,
        secret=new_secret(),
        friendly_name=friendly_name,
        date_created=time.time(),
    )
    await store.create_api_key(key)
    return key


async def ensure_default_account(
    store: AccountStore, sid: str | None, auth_token: str | None
) -> tuple[Account, bool]:
    """The default account, created on first start; True when it was created now.

    With ``sid`` and ``auth_token`` given (CALLSTREAM_ACCOUNT_SID/AUTH_TOKEN) that
    account is used, created if missing; an existing one must have that token.
    """
    if sid is not None:
        existing = await store.get_account(sid)
        if existing is None:
            return await create_account(store, sid=sid, auth_token=auth_token), True
        if auth_token is not None and not hmac.compare_digest(
            existing.auth_token.encode(), auth_token.encode()
        ):
            raise AccountError(f"account {sid} exists with a different auth token")
        return existing, False
    accounts = await store.list_accounts()
    if accounts:
        return accounts[0], False
    return await create_account(store, friendly_name="Default account"), True


async def authenticate(store: AccountStore, username: str, password: str) -> Account | None:
    """The account that ``username``/``password`` prove, or None.

    The username is an account SID (password: its auth token) or an API key SID
    (password: the key's secret). Secrets are compared in constant time, and a
    missing account costs the same comparison as a wrong token.
    """
    given = password.encode("utf-8", "replace")
    if API_KEY_SID.match(username):
        key = await store.get_api_key(username)
        expected = key.secret if key is not None else new_secret()
        if not hmac.compare_digest(expected.encode(), given) or key is None:
            return None
        return await store.get_account(key.account_sid)
    account = await store.get_account(username) if ACCOUNT_SID.match(username) else None
    expected = account.auth_token if account is not None else new_secret()
    if not hmac.compare_digest(expected.encode(), given) or account is None:
        return None
    return account
