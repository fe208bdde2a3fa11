"""Rendering the service's complete `.env`: every spec variable, the platform's, and the secrets.

Values are quoted so that both python-dotenv and the release supervisor read them back exactly:
single quotes (literal, no interpolation) when possible, otherwise double quotes with escapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from contracts.spec import ProjectSpec

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOUBLE_QUOTED_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(value: str) -> str:
    # python-dotenv still unescapes \\ and \' inside single quotes, so those go double-quoted.
    if not any(ch in value for ch in "'\\\n\r"):
        return f"'{value}'"
    return '"' + "".join(_DOUBLE_QUOTED_ESCAPES.get(ch, ch) for ch in value) + '"'


def render_env(
    spec: ProjectSpec,
    *,
    port: int,
    bind_host: str,
    version: str,
    secrets: Mapping[str, str],
    data_dir: str | None = None,
) -> str:
    """The `.env` text. A secret absent from `secrets` is written empty (optional secrets).

    `data_dir` (process mode) is where the service keeps files across releases, outside the
    release directory a new deploy replaces: generated services put their SQLite file there.
    """
    values: dict[str, str] = {}
    for var in spec.config:
        if var.secret:
            values[var.name] = secrets.get(var.name, "")
        else:
            values[var.name] = var.default or ""
    for name in spec.secret_names:
        # An integration's variable the analyst did not also list in `config`.
        values.setdefault(name, secrets.get(name, ""))
    # The platform's variables win: the port is the one allocated, whatever the spec says.
    values.update({"PORT": str(port), "HOST": bind_host, "APP_VERSION": version})
    if data_dir is not None:
        values["DATA_DIR"] = data_dir
    for name in values:
        if not _NAME.match(name):
            raise ValueError(f"spec variable {name!r} is not a valid environment variable name")
    return "".join(f"{name}={quote(value)}\n" for name, value in values.items())
