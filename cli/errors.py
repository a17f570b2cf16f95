"""One way for every command to fail: a message and a hint on stderr, and a non-zero exit code,
instead of a traceback the user has to read."""

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console


class CliError(Exception):
    """A failure the user can act on; ``hint`` says how."""

    def __init__(self, message: str, hint: str = "", exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


@contextmanager
def reporting_errors(console: Console) -> Iterator[None]:
    """Turn a CliError raised inside a command into a red message and ``typer.Exit``."""
    try:
        yield
    except CliError as error:
        console.print(f"[bold red]error:[/] {error.message}", highlight=False)
        if error.hint:
            console.print(f"[yellow]hint:[/] {error.hint}", highlight=False)
        raise typer.Exit(error.exit_code) from None
