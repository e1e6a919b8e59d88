"""AccountStore on both backends: the behaviour tests/unit/test_accounts.py checks on SQLite."""

from __future__ import annotations

import asyncio

import pytest

from callstream.accounts import (
    AccountError,
    authenticate,
    create_account,
    create_api_key,
    ensure_default_account,
)
from callstream.store.interfaces import Account, ApiKey
from tests.stores.conftest import Backend


def test_accounts_are_stored_listed_in_creation_order_and_authenticate(backend: Backend) -> None:
    async def scenario() -> None:
        async with backend.open() as stores:
            store = stores.accounts
            assert await store.list_accounts() == []
            assert await store.get_account("AC" + "0" * 32) is None
            # Equal creation times: the SID breaks the tie, so the order is total.
            b = Account(
                sid="AC" + "b" * 32, auth_token="t" * 32, friendly_name="b", date_created=5.0
            )
            a = Account(
                sid="AC" + "a" * 32, auth_token="u" * 32, friendly_name="a", date_created=5.0
            )
            first = Account(
                sid="AC" + "c" * 32, auth_token="v" * 32, friendly_name="", date_created=1.5
            )
            for account in (b, a, first):
                await store.create_account(account)
            assert await store.get_account(a.sid) == a
            assert list(await store.list_accounts()) == [first, a, b]
            made = await create_account(store, friendly_name="ops")
            assert await authenticate(store, made.sid, made.auth_token) == made
            assert await authenticate(store, made.sid, made.auth_token + "x") is None
            with pytest.raises(AccountError):
                await create_account(store, sid=made.sid)

    asyncio.run(scenario())


def test_api_keys_belong_to_their_account(backend: Backend) -> None:
    async def scenario() -> None:
        async with backend.open() as stores:
            store = stores.accounts
            account = await create_account(store)
            key = await create_api_key(store, account.sid, "ci")
            assert await store.get_api_key(key.sid) == key
            assert await store.get_api_key("SK" + "0" * 32) is None
            found = await authenticate(store, key.sid, key.secret)
            assert found is not None and found.sid == account.sid
            assert await authenticate(store, key.sid, account.auth_token) is None
            with pytest.raises(AccountError):
                await create_api_key(store, "AC" + "1" * 32)
            # The store itself refuses a key of an account it does not hold.
            orphan = ApiKey(
                sid="SK" + "9" * 32,
                account_sid="AC" + "1" * 32,
                secret="s" * 32,
                friendly_name="",
                date_created=1.0,
            )
            with pytest.raises(Exception):  # noqa: B017 - each driver has its own error type
                await store.create_api_key(orphan)
            assert await store.get_api_key(orphan.sid) is None

    asyncio.run(scenario())


def test_the_default_account_is_created_once_and_seen_from_another_connection(
    backend: Backend,
) -> None:
    async def scenario() -> None:
        async with backend.open() as one, backend.open() as two:
            account, created = await ensure_default_account(one.accounts, None, None)
            assert created
            again, created_again = await ensure_default_account(two.accounts, None, None)
            assert again == account and not created_again

    asyncio.run(scenario())
