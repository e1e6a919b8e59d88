"""The queryable store behind the Voice Insights read API (embedded backend)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from callstream.store.interfaces import OutputEvent


def index_events(conn: sqlite3.Connection, events: Sequence[OutputEvent]) -> None:
    """Index what the read API queries, in the transaction that stores the events."""
