"""Accounts and API keys in PostgreSQL (``AccountStore``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from callstream.store.interfaces import Account, ApiKey
from callstream.store.postgres.database import Pool

_ACCOUNT_COLUMNS = "sid, auth_token, friendly_name, date_created"
_KEY_COLUMNS = "sid, account_sid, secret, friendly_name, date_created"


def _account(row: Sequence[Any]) -> Account:
    return Account(sid=row[0], auth_token=row[1], friendly_name=row[2], date_created=row[3])


class PostgresAccountStore:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def create_account(self, account: Account) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO accounts ({_ACCOUNT_COLUMNS}) VALUES (%s, %s, %s, %s)",
                (account.sid, account.auth_token, account.friendly_name, account.date_created),
            )

    async def get_account(self, sid: str) -> Account | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE sid = %s", (sid,)
            )
            row = await cursor.fetchone()
        return None if row is None else _account(row)

    async def list_accounts(self) -> Sequence[Account]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY date_created, sid"
            )
            rows = await cursor.fetchall()
        return [_account(row) for row in rows]

    async def create_api_key(self, key: ApiKey) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s)",
                (key.sid, key.account_sid, key.secret, key.friendly_name, key.date_created),
            )

    async def get_api_key(self, sid: str) -> ApiKey | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE sid = %s", (sid,)
            )
            row = await cursor.fetchone()
        if row is None:
            return None
        return ApiKey(
            sid=row[0], account_sid=row[1], secret=row[2], friendly_name=row[3], date_created=row[4]
        )
