"""One SQLite database in WAL mode, used from asyncio without blocking the loop.

Writes go through a single writer thread. Every job that is waiting when the
writer comes round runs in one transaction (each inside its own SAVEPOINT, so a
job that fails is undone alone) and one commit makes them all durable: group
commit, which is what lets many small ingest requests share one fsync.
Reads run on a small pool of reader threads with their own connections, which
WAL lets proceed while the writer writes.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

Job = Callable[[sqlite3.Connection], Any]

# How many jobs one transaction may take; bounds commit latency under load.
_MAX_GROUP = 256


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk when it returns, which the ingest API's 202 promises.
        conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class Database:
    """The embedded backend's database file and its threads."""

    def __init__(self, path: Path, *, readers: int = 2) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_conn = _connect(path, readonly=False)
        self._jobs: queue.SimpleQueue[tuple[Job, Future[Any]] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="sqlite-writer", daemon=True)
        self._writer.start()
        self._local = threading.local()
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-reader")
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._closed = False

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` in a write transaction; return once it is committed to disk."""
        if self._closed:
            raise RuntimeError("database is closed")
        future: Future[T] = Future()
        self._jobs.put((job, future))
        return await asyncio.wrap_future(future)

    def write_sync(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """As ``write``, for code outside the event loop (CLI, start-up)."""
        future: Future[T] = Future()
        self._jobs.put((job, future))
        return future.result()

    async def read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` on a reader connection (a consistent snapshot per call)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, job)

    def read_sync(self, job: Callable[[sqlite3.Connection], T]) -> T:
        return self._readers.submit(self._run_read, job).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        self._writer.join()
        self._readers.shutdown(wait=True)
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
        self._writer_conn.close()

    def _run_read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, readonly=True)
            self._local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        conn.execute("BEGIN")
        try:
            return job(conn)
        finally:
            conn.execute("COMMIT")

    def _write_loop(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            group = [first]
            stop = False
            while len(group) < _MAX_GROUP:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
            self._run_group(group)
            if stop:
                return

    def _run_group(self, group: list[tuple[Job, Future[Any]]]) -> None:
        conn = self._writer_conn
        results: list[tuple[Future[Any], bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job, future in group:
                conn.execute("SAVEPOINT job")
                try:
                    value = job(conn)
                except BaseException as exc:  # the job's own failure, reported to its caller
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((future, False, exc))
                else:
                    conn.execute("RELEASE job")
                    results.append((future, True, value))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for _, future in group:
                future.set_exception(exc)
            return
        for future, ok, value in results:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
