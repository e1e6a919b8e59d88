"""The connection pool every PostgreSQL store shares, and the locks they take.

Stores borrow a connection per call (``async with pool.connection()``); a write runs inside
``conn.transaction()``, so its checks and its effects commit together or not at all, on any
machine: unlike the embedded backend there is no single writer to serialise changes, so the
checks that must be atomic take a row or advisory lock first.
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

Connection = AsyncConnection[TupleRow]
Pool = AsyncConnectionPool[Connection]

# The advisory-lock class (first key of the two-key form) of per-account control-plane
# changes; the second key is hashtext(account_sid). A hash collision only makes two accounts'
# changes wait for each other, never lets one account's changes interleave.
_ACCOUNT_LOCK_CLASS = 0x4353  # "CS"


async def open_pool(conninfo: str, *, min_size: int = 1, max_size: int = 10) -> Pool:
    """A pool of connections to ``conninfo``, with ``min_size`` already connected."""
    pool: Pool = AsyncConnectionPool(
        conninfo, min_size=min_size, max_size=max_size, open=False, name="callstream"
    )
    await pool.open(wait=True, timeout=30.0)
    return pool


async def lock_account(conn: Connection, account_sid: str) -> None:
    """Serialise this transaction's control-plane change with the account's others.

    Held until the transaction ends. It is what makes "count sinks, then insert" and "check
    the sink is free, then subscribe it" atomic across processes.
    """
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_ACCOUNT_LOCK_CLASS, account_sid)
    )
