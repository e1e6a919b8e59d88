"""`callstream db`: the distributed backend's PostgreSQL schema.

``callstream db upgrade`` applies the migrations the database lacks and prints its schema
version. Workers also migrate on start (``open_postgres``), so running it is optional; it
is for deployments that upgrade the schema as a separate step before rolling out workers.

Exit codes: 0 done; 1 the database refused (a newer schema, no connection); 2 bad usage.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from callstream.store.postgres.schema import DatabaseError, SchemaTooNew, migrate

EXIT_FAILED = 1
EXIT_USAGE = 2

db_app = typer.Typer(
    no_args_is_help=True, help="Manage the PostgreSQL database (distributed backend)."
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@db_app.command()
def upgrade(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="CALLSTREAM_DATABASE_URL",
            help="PostgreSQL URL, e.g. postgresql://user@host/db",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Apply pending schema migrations and print the schema version."""
    if not database_url:
        err.print("[red]error:[/red] give --database-url (or CALLSTREAM_DATABASE_URL)")
        raise typer.Exit(EXIT_USAGE)
    try:
        result = asyncio.run(migrate(database_url))
    except SchemaTooNew as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from None
    except DatabaseError as exc:
        err.print(f"[red]error:[/red] cannot migrate the database: {escape(str(exc))}")
        raise typer.Exit(EXIT_FAILED) from None
    if result.applied:
        applied = ", ".join(str(v) for v in result.applied)
        out.print(f"applied migrations {applied}; schema version {result.version}")
    else:
        out.print(f"schema version {result.version} (up to date)")
