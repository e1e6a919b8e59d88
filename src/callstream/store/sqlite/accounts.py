"""Accounts and API keys in the embedded database."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from callstream.store.interfaces import Account, ApiKey
from callstream.store.sqlite.database import Database


def _account(row: tuple[str, str, str, float]) -> Account:
    return Account(sid=row[0], auth_token=row[1], friendly_name=row[2], date_created=row[3])


class SqliteAccountStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_account(self, account: Account) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO accounts VALUES (?, ?, ?, ?)",
                (account.sid, account.auth_token, account.friendly_name, account.date_created),
            )

        await self._db.write(job)

    async def get_account(self, sid: str) -> Account | None:
        def job(conn: sqlite3.Connection) -> Account | None:
            row = conn.execute("SELECT * FROM accounts WHERE sid = ?", (sid,)).fetchone()
            return None if row is None else _account(row)

        return await self._db.read(job)

    async def list_accounts(self) -> Sequence[Account]:
        def job(conn: sqlite3.Connection) -> list[Account]:
            rows = conn.execute("SELECT * FROM accounts ORDER BY date_created, sid").fetchall()
            return [_account(row) for row in rows]

        return await self._db.read(job)

    async def create_api_key(self, key: ApiKey) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?)",
                (key.sid, key.account_sid, key.secret, key.friendly_name, key.date_created),
            )

        await self._db.write(job)

    async def get_api_key(self, sid: str) -> ApiKey | None:
        def job(conn: sqlite3.Connection) -> ApiKey | None:
            row = conn.execute("SELECT * FROM api_keys WHERE sid = ?", (sid,)).fetchone()
            if row is None:
                return None
            return ApiKey(
                sid=row[0],
                account_sid=row[1],
                secret=row[2],
                friendly_name=row[3],
                date_created=row[4],
            )

        return await self._db.read(job)
