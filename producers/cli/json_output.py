"""How a command prints for scripts (`--json`): one document, or one object per line.

A read command prints one JSON document (a list of objects or an object) on stdout and nothing
else there; a command that follows something (`--follow`, `events tail`) prints one object per
line (NDJSON), so `jq` reads each as it arrives. Datetimes, UUIDs and decimals print as strings.
"""

from __future__ import annotations

import json


def document(value: object) -> str:
    """The whole answer of a read command, indented for a person who looks at it too."""
    return json.dumps(value, indent=2, default=str)


def record(value: object) -> str:
    """One line of a stream: no newline inside, so each line parses on its own."""
    return json.dumps(value, default=str)
