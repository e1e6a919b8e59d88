"""Accounts, API keys and authentication on the embedded store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from callstream.accounts import (
    AccountError,
    authenticate,
    create_account,
    create_api_key,
    ensure_default_account,
)
from callstream.store.sqlite.accounts import SqliteAccountStore
from callstream.store.sqlite.database import Database
from callstream.store.sqlite.schema import migrate


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteAccountStore]:
    db = Database(tmp_path / "a.db")
    db.write_sync(migrate)
    yield SqliteAccountStore(db)
    db.close()


def test_created_accounts_have_twilio_shaped_sids_and_authenticate(
    store: SqliteAccountStore,
) -> None:
    async def scenario() -> None:
        account = await create_account(store, friendly_name="ops")
        assert account.sid.startswith("AC") and len(account.sid) == 34
        assert len(account.auth_token) == 32
        assert await authenticate(store, account.sid, account.auth_token) == account
        assert await authenticate(store, account.sid, account.auth_token + "x") is None
        assert await authenticate(store, "AC" + "0" * 32, account.auth_token) is None
        assert await authenticate(store, "someone", account.auth_token) is None

    asyncio.run(scenario())


def test_api_keys_authenticate_as_their_account(store: SqliteAccountStore) -> None:
    async def scenario() -> None:
        account = await create_account(store)
        key = await create_api_key(store, account.sid, "ci")
        assert key.sid.startswith("SK") and len(key.sid) == 34
        found = await authenticate(store, key.sid, key.secret)
        assert found is not None and found.sid == account.sid
        assert await authenticate(store, key.sid, account.auth_token) is None
        with pytest.raises(AccountError):
            await create_api_key(store, "AC" + "1" * 32)

    asyncio.run(scenario())


def test_the_default_account_is_created_once(store: SqliteAccountStore) -> None:
    async def scenario() -> None:
        first, created = await ensure_default_account(store, None, None)
        assert created
        again, created_again = await ensure_default_account(store, None, None)
        assert again == first and not created_again

    asyncio.run(scenario())


def test_the_default_account_can_be_given(store: SqliteAccountStore) -> None:
    sid, token = "AC" + "ab" * 16, "a-long-enough-token"

    async def scenario() -> None:
        account, created = await ensure_default_account(store, sid, token)
        assert created and (account.sid, account.auth_token) == (sid, token)
        _, created_again = await ensure_default_account(store, sid, token)
        assert not created_again
        with pytest.raises(AccountError, match="different auth token"):
            await ensure_default_account(store, sid, "another-long-token")

    asyncio.run(scenario())


def test_bad_account_input_is_refused(store: SqliteAccountStore) -> None:
    async def scenario() -> None:
        with pytest.raises(AccountError, match="32 lower-case hex"):
            await create_account(store, sid="AC123")
        with pytest.raises(AccountError, match="16 characters"):
            await create_account(store, auth_token="short")
        account = await create_account(store)
        with pytest.raises(AccountError, match="already exists"):
            await create_account(store, sid=account.sid)

    asyncio.run(scenario())
