"""The embedded database's tables, as numbered migrations.

Each file in ``migrations/`` (``NNNN_name.sql``) is one migration, applied in
order; ``PRAGMA user_version`` records how many have been applied, so opening a
data directory applies the rest and upgrading callstream upgrades its data in
place. Never edit a released migration: add a new file.
"""

from __future__ import annotations

import re
import sqlite3
from functools import cache
from importlib import resources

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@cache
def migrations() -> tuple[str, ...]:
    """The migration scripts, in order (checked to be numbered 1, 2, 3, ...)."""
    folder = resources.files(__package__).joinpath("migrations")
    found = sorted(
        (int(match.group(1)), entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if (match := _NAME.match(entry.name))
    )
    numbers = [number for number, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1, 2, 3, ... without gaps: {numbers}")
    return tuple(script for _, script in found)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database lacks; return its version afterwards."""
    scripts = migrations()
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > len(scripts):
        raise RuntimeError(
            f"the data directory is from a newer callstream (schema {current}, "
            f"this version knows {len(scripts)}); upgrade callstream"
        )
    for number, script in enumerate(scripts[current:], start=current + 1):
        for statement in script.split(";"):
            if statement.strip() and not _only_comments(statement):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    return len(scripts)


def _only_comments(statement: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in statement.splitlines())
