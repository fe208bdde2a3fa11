"""What `orchestrator` exits with, in one place: the commands return these and `--help` lists them.

Only the standard library, because the parser prints the list in `orchestrator --help`. A script
that follows a project (`status --follow`, `request --follow`) branches on the code alone: 0 the
service is live, 1 it failed, 3 it waits for a person, 4 it was archived.
"""

from __future__ import annotations

import textwrap
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    WAITING_FOR_YOU = 3
    ARCHIVED = 4
    INTERRUPTED = 130
    CLOSED_PIPE = 141


_MEANING = {
    ExitCode.OK: "done; with --follow: the project is active (its service is live)",
    ExitCode.FAILED: "the command failed, and says why; with --follow: the project failed "
    "or its request was refused",
    ExitCode.USAGE: "a wrong argument or a missing value",
    ExitCode.WAITING_FOR_YOU: "with --follow: the project waits for an answer "
    "(`orchestrator answer`) or a secret (`orchestrator secrets set`)",
    ExitCode.ARCHIVED: "with --follow: the project is archived",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C or SIGTERM)",
    ExitCode.CLOSED_PIPE: "the output's reader went away (`| head`); as a shell reports a "
    "command that SIGPIPE ended",
}


def exit_codes_help() -> str:
    """The exit-code table, as `orchestrator --help` prints it under the commands."""
    rows = (
        textwrap.fill(_MEANING[code], width=79, initial_indent=f"  {code.value:>3}  ",
                      subsequent_indent=" " * 7)
        for code in ExitCode
    )  # fmt: skip
    return "exit codes:\n" + "\n".join(rows)
