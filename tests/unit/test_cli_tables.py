"""The read commands' tables: rich on a terminal, plain columns for scripts and pipes."""

from __future__ import annotations

import re

from producers.cli.tables import table_lines

HEADER = ("name", "state", "ports")
ROWS = [("notes-api", "active", 3), ("[bold]x[/bold]", "failed", 12)]


def test_piped_tables_are_plain_columns_scripts_can_split() -> None:
    lines = table_lines(HEADER, ROWS, right=(2,), terminal=False)
    assert lines == [
        "name            state   ports",
        "notes-api       active      3",
        "[bold]x[/bold]  failed     12",
    ]
    # No colour, no box characters, no trailing spaces, hostile markup printed as it is.
    assert not any("\x1b" in line or "─" in line or line != line.rstrip() for line in lines)
    assert [re.split(r"\s{2,}", line.strip()) for line in lines[1:]] == [
        ["notes-api", "active", "3"],
        ["[bold]x[/bold]", "failed", "12"],
    ]


def test_a_long_cell_is_never_wrapped_or_cut_when_piped() -> None:
    url = "http://127.0.0.1:21000/" + "x" * 300
    (_, row) = table_lines(("name", "url"), [("a", url)], terminal=False)
    assert row.endswith(url)


def test_a_terminal_gets_a_bold_header_over_a_rule() -> None:
    lines = table_lines(HEADER, ROWS, terminal=True)
    assert "\x1b[1m" in lines[0]  # bold header
    assert set(lines[1]) == {"─"}
    assert "notes-api" in lines[2] and "[bold]x[/bold]" in lines[3]
