"""One way for the ``fedgmm`` commands to turn expected errors into a clear line and exit code 2."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

T = TypeVar("T")

err_console = Console(stderr=True)


def guarded(action: Callable[[], T], extra: tuple[type[BaseException], ...] = ()) -> T:
    """Run ``action``; our errors, bad input (``ValueError``, ``TypeError``, missing files) and
    ``extra`` print ``error: …`` on standard error and exit with code 2, without a traceback.

    ``typer.Exit`` and ``typer.Abort`` (``RuntimeError`` subclasses, so an ``extra`` of
    ``RuntimeError`` would catch them) pass through with their own exit code."""
    from rich.markup import escape

    from fedgmm.exceptions import FedGMMError

    expected: tuple[type[BaseException], ...] = (FedGMMError, ValueError, FileNotFoundError, TypeError, *extra)
    try:
        return action()
    except (typer.Exit, typer.Abort):
        raise
    except expected as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
