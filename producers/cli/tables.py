"""The read commands' tables (projects, lag, dead letters, servers, tokens, users), drawn by rich.

On a terminal: a rich table, bold header over a rule, numbers right-aligned, as wide as the
terminal. Anywhere else (a pipe, a file, a test reading the output): plain columns two spaces
apart, no colour, no box characters, no wrapping and no trailing spaces, so `awk`, `cut` and
`line.split()` read them as before. rich is imported inside `table_lines` only, so
`orchestrator --help` and the commands that print no table do not pay for it
(tests/unit/test_cli_imports.py).
"""

from __future__ import annotations

import io
import shutil
import sys
from collections.abc import Iterable, Sequence

#: Wide enough that no row of a piped table is ever wrapped or cut.
_PLAIN_WIDTH = 100_000


def table_lines(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right: Iterable[int] = (),
    terminal: bool | None = None,
) -> list[str]:
    """The table's lines; `right` names the columns (by index) aligned right, e.g. counts.

    `terminal` defaults to whether stdout is one.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    tty = sys.stdout.isatty() if terminal is None else terminal
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=tty,
        no_color=not tty,
        color_system="auto" if tty else None,
        width=shutil.get_terminal_size().columns if tty else _PLAIN_WIDTH,
        highlight=False,
        emoji=False,
        markup=False,
    )
    table = Table(
        box=box.SIMPLE_HEAD if tty else None,
        show_edge=False,
        pad_edge=False,
        header_style="bold" if tty else "",
        padding=(0, 1),
    )
    aligned_right = set(right)
    for index, title in enumerate(header):
        table.add_column(
            title, justify="right" if index in aligned_right else "left", no_wrap=not tty
        )
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console.print(table)
    return [line.rstrip() for line in buffer.getvalue().splitlines()]
