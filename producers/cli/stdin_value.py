"""A secret's value as `orchestrator secrets set` reads it: all of stdin, never an argument.

Its own module, with the standard library only, so remote mode reads the value the same way
without loading Vault or the database.
"""

from __future__ import annotations

from typing import TextIO


def read_value(source: TextIO) -> str:
    """All of stdin: a multi-line value (a PEM key) keeps every line and its final newline;
    a one-line value loses the newline `echo` adds."""
    raw = source.read()
    if raw.count("\n") == 1 and raw.endswith("\n"):
        return raw.rstrip("\r\n")
    return raw
