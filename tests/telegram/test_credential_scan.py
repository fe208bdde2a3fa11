"""The credential scanner every door uses: provider formats are caught, ordinary prose is not.

No I/O: this pins which detect-secrets plugins are in use, so a dependency upgrade that stops
catching a format, or starts refusing honest descriptions, fails here first.
"""

from __future__ import annotations

import pytest

from producers.credential_scan import CredentialInText, find_credentials, refuse_credentials
from tests.telegram.test_secrets import AWS_KEY, GITHUB_TOKEN, PRIVATE_KEY


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (f"key {AWS_KEY}", "AWS Access Key"),
        (GITHUB_TOKEN, "GitHub Token"),
        (PRIVATE_KEY, "Private Key"),
        ("bot token 123456789:AAH" + "k" * 32, "Telegram Bot Token"),
        ("pull from https://deploy:hunter2@git.example.org/app.git", "Basic Auth Credentials"),
        ("xoxb-" + "1234567890-1234567890123-" + "a" * 24, "Slack Token"),
    ],
)
def test_provider_credentials_are_found_by_kind(text: str, kind: str) -> None:
    assert kind in {finding.kind for finding in find_credentials(text)}


@pytest.mark.parametrize(
    "text",
    [
        "A todo list API with users, due dates and reminders by e-mail",
        "A URL shortener: POST /links returns a code like aZ3kQ9, GET /<code> redirects",
        "Store a PASSWORD_HASH column; users log in with email and password",
        "Deploy to https://shop.example.org and read the token from TELEGRAM_BOT_TOKEN",
        "Use PostgreSQL 16, Redis 7 and the colour #1f6feb for buttons",
    ],
)
def test_ordinary_descriptions_pass(text: str) -> None:
    assert find_credentials(text) == []


def test_the_refusal_names_the_kind_and_the_remedy_but_never_the_value() -> None:
    with pytest.raises(CredentialInText) as refused:
        refuse_credentials(f"line one\nmy key is {AWS_KEY}", how_to_store="use /secret NAME")

    message = str(refused.value)
    assert "AWS Access Key" in message and "use /secret NAME" in message
    assert AWS_KEY not in message
    assert [(f.kind, f.line) for f in refused.value.findings] == [("AWS Access Key", 2)]
