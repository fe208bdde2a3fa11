"""Refuse text that carries a credential before it reaches the bus, Postgres or an LLM.

Descriptions and answers go onto the stream, into `projects.description`/`answers` and into
the analyst's prompts. A user who pastes a token there has leaked it to all three, so every
door (bot, API, CLI) scans first and refuses. The detection is Yelp's detect-secrets, used
in-process through its plugin classes: its provider-specific detectors (AWS, GitHub, GitLab,
Slack, Stripe, OpenAI, Telegram bot tokens, private keys, JWTs, basic-auth URLs, ...) are
maintained upstream as formats change, which hand-written regexes here would not be.

The entropy and keyword detectors are left out on purpose: they flag ordinary prose
("a todo app with users" scores as high-entropy base64) and would refuse honest descriptions.
A finding names the kind of credential only; the matched value is never kept or logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import BasePlugin
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

#: The provider-format detectors: each matches a credential's published shape, not a guess.
_DETECTORS: tuple[BasePlugin, ...] = (
    ArtifactoryDetector(),
    AWSKeyDetector(),
    AzureStorageKeyDetector(),
    BasicAuthDetector(),
    DiscordBotTokenDetector(),
    GitHubTokenDetector(),
    GitLabTokenDetector(),
    JwtTokenDetector(),
    MailchimpDetector(),
    NpmDetector(),
    OpenAIDetector(),
    PrivateKeyDetector(),
    PypiTokenDetector(),
    SendGridDetector(),
    SlackDetector(),
    SquareOAuthDetector(),
    StripeDetector(),
    TelegramBotTokenDetector(),
    TwilioKeyDetector(),
)


@dataclass(frozen=True)
class CredentialFinding:
    """One credential-shaped value: its kind and line, never the value itself."""

    kind: str
    line: int


class CredentialInText(ValueError):
    """Text was refused because it contains a credential; the message says what to do."""

    def __init__(self, findings: Sequence[CredentialFinding], how_to_store: str) -> None:
        self.findings = tuple(findings)
        kinds = ", ".join(sorted({f.kind for f in findings}))
        super().__init__(
            f"this text looks like it contains a credential ({kinds}), so it was not sent: "
            f"descriptions and answers are stored and shown to the language model. "
            f"Remove the value and store it as a secret instead: {how_to_store}"
        )


def find_credentials(text: str) -> list[CredentialFinding]:
    """Every credential-shaped value in `text`, one finding per kind and line."""
    findings: list[CredentialFinding] = []
    for number, line in enumerate(text.splitlines() or [text], start=1):
        for detector in _DETECTORS:
            if any(True for _ in detector.analyze_string(line)):
                findings.append(CredentialFinding(kind=str(detector.secret_type), line=number))
    return findings


def refuse_credentials(text: str, *, how_to_store: str) -> None:
    """Raise `CredentialInText` if `text` carries a credential; `how_to_store` is the remedy."""
    findings = find_credentials(text)
    if findings:
        raise CredentialInText(findings, how_to_store)
