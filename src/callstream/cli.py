"""The `callstream` command line."""

import typer

app = typer.Typer(no_args_is_help=True, help="Self-hosted Voice Insights Event Streams.")


def main() -> None:
    app()
