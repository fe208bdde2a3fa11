"""The environment a platform git child runs with: isolated, and authenticated without argv.

Every step that clones (the engineer, the indexer) runs git with a private HOME, no system
config and no terminal prompt, so neither the host's git configuration nor a hung credential
prompt can change what it does. A GitHub token travels as an `http.extraheader` set through
`GIT_CONFIG_*` variables, which the git child alone sees: never in argv, a URL or a file.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path


def isolated_git_env(home: Path) -> dict[str, str]:
    """Git with `home` as HOME, no system configuration and no prompts."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
    }


def github_token_env(token: str) -> dict[str, str]:
    """Git configuration that sends `token` to github.com as the `x-access-token` Basic header."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.https://github.com/.extraheader",
        "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: basic {basic}",
    }
