"""Constrained field types for what side effects are built from: commits, URLs, slugs, names.

A consumer builds paths, git commands and Vault paths from these values, so an event that
carries a malformed one is rejected when it is decoded (the runtime parks it in the dead-letter
stream with the validation error) instead of reaching a handler. The patterns are copied here,
not imported, because contracts import nothing else of ours; `consumers/analyst/slugs.py` is
the source of truth for the slug rule and a unit test keeps the two equal.

Only the shape is checked here. Whether a clone URL belongs to the configured git host is a
deployment fact, checked where that setting is known (`infra/repo_urls.py`).
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

#: A full git object id (SHA-1): abbreviated ids are ambiguous and `../` is not a commit.
COMMIT_PATTERN = r"^[0-9a-f]{40}$"
#: Copied from consumers/analyst/slugs.py SLUG_PATTERN (kept equal by a unit test).
SLUG_PATTERN = r"^[a-z][a-z0-9-]{1,48}[a-z0-9]$"
#: An environment variable a generated service reads; it also names a Vault path segment.
VAR_NAME_PATTERN = r"^[A-Z][A-Z0-9_]{0,63}$"
#: Schemes a repository may be cloned over; `http` (no TLS) and `ext::` transports are refused.
CLONE_SCHEMES = frozenset({"git", "https", "file", "ssh"})

MAX_CLONE_URL = 2000
#: Bounds of free text: generous for people and models, finite for the bus and the database.
MAX_TEXT = 16000
MAX_NAME = 200
MAX_ITEMS = 200
#: Bound of a failure report (a failing test run's summary, a playbook's error).
MAX_REPORT = 64000

_WHITESPACE = re.compile(r"\s")


def check_clone_url_shape(url: str) -> str:
    """`url` unchanged if it is a plausible clone URL with no credentials; else ValueError.

    A user name alone is accepted for ssh (`ssh://git@host/...`); any password, and any user
    part in an https or git URL (where tokens hide: `https://x-access-token:...@`), is refused.
    """
    if _WHITESPACE.search(url) or any(ord(char) < 32 for char in url):
        raise ValueError("a clone URL may not contain whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme not in CLONE_SCHEMES:
        raise ValueError(
            f"clone URL scheme {parts.scheme or '(none)'!r} is not one of "
            f"{', '.join(sorted(CLONE_SCHEMES))}"
        )
    if parts.password is not None or (parts.username is not None and parts.scheme != "ssh"):
        raise ValueError("a clone URL may not carry credentials; the git host's token is in Vault")
    if parts.scheme != "file" and not parts.hostname:
        raise ValueError(f"a {parts.scheme} clone URL needs a host")
    if not parts.path.strip("/"):
        raise ValueError("a clone URL needs a repository path")
    return url


def check_https_url(url: str) -> str:
    """`url` unchanged if it is an https URL with a host and no credentials; else ValueError.

    An external API's base URL: plain http would send the service's API key in clear, and a
    user part is where a key would hide (`https://key@host`), so both are refused.
    """
    if _WHITESPACE.search(url) or any(ord(char) < 32 for char in url):
        raise ValueError("a URL may not contain whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError(f"an API base URL must be https://..., not {parts.scheme or '(none)'}://")
    if not parts.hostname:
        raise ValueError("an API base URL needs a host, e.g. https://api.example.com")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "an API base URL may not carry credentials; name the key's variable in env_vars"
        )
    if parts.query or parts.fragment:
        raise ValueError("an API base URL has no query or fragment; keys go in env_vars by name")
    return url


#: A run of letters and digits this long with digits in it reads as a key, not a name.
_VALUE_LIKE = re.compile(r"(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z])[A-Z0-9]{16,}")


def check_var_name_not_value(name: str) -> str:
    """`name` unchanged unless it looks like a credential pasted where its name belongs.

    `AKIAIOSFODNN7EXAMPLE` matches the variable-name pattern, but no one names a variable
    with sixteen letters and digits in a row; a name's words are separated by underscores.
    """
    if _VALUE_LIKE.search(name):
        raise ValueError(
            f"{name[:4]}... looks like a secret value, not a variable name: give the NAME "
            "(e.g. OPENWEATHER_API_KEY) and store the value with `orchestrator secrets set`"
        )
    return name


#: A name a check step captures a value under, used later as `{name}`.
CAPTURE_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,63}$"
#: Where in a JSON answer a captured value sits: keys and list indexes joined by dots (`0.id`).
JSON_PATH_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,15}$"
MAX_CHECK_PATH = 2000
_PLACEHOLDER = re.compile(r"\{[a-z_][a-z0-9_]{0,63}\}")


def check_relative_path(path: str) -> str:
    """`path` unchanged if it is a path on the project's own URL; else ValueError.

    The deployer appends it to the release's `http://host:port`, so anything that could move
    the request elsewhere is refused: a scheme or host (`//evil`, `@host`), a backslash,
    whitespace, control characters, and braces other than `{capture}` placeholders.
    """
    if not path.startswith("/") or path.startswith("//"):
        raise ValueError(
            "a check path starts with a single '/' (e.g. /expenses); no scheme or host"
        )
    if _WHITESPACE.search(path) or any(ord(char) < 32 or ord(char) == 127 for char in path):
        raise ValueError("a check path may not contain whitespace or control characters")
    if "\\" in path or "@" in path.split("?", 1)[0]:
        raise ValueError("a check path may not contain a backslash or '@'")
    if "{" in _PLACEHOLDER.sub("", path) or "}" in _PLACEHOLDER.sub("", path):
        raise ValueError("braces in a check path only name captured values, e.g. /items/{id}")
    return path


CommitSha = Annotated[str, Field(pattern=COMMIT_PATTERN, description="Full 40-hex git commit id")]
Slug = Annotated[str, Field(pattern=SLUG_PATTERN)]
VarName = Annotated[str, Field(pattern=VAR_NAME_PATTERN)]
CloneUrl = Annotated[
    str, Field(min_length=1, max_length=MAX_CLONE_URL), AfterValidator(check_clone_url_shape)
]
CheckPath = Annotated[
    str, Field(min_length=1, max_length=MAX_CHECK_PATH), AfterValidator(check_relative_path)
]
UserId = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
