"""`orchestrator tokens create | list | revoke` against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.db.migrate import upgrade
from infra.db.models import ApiToken, User, UserRole, UserStatus
from infra.db.session import make_engine, make_sessionmaker
from producers.api.tokens import (
    TOKEN_PREFIX,
    InvalidToken,
    TokenError,
    authenticate,
    hash_token,
    issue_token,
    parse_duration,
)
from producers.cli import tokens
from producers.cli.main import dispatch
from producers.cli.parser import build_parser


async def test_create_prints_the_token_once_and_stores_only_its_hash(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    lines: list[str] = []

    assert await tokens.create(sessionmaker, lines.append, name="ci", user="carol") == 0

    token = lines[0]
    assert token.startswith(TOKEN_PREFIX)
    assert len(token) > 40
    assert "shown only now" in lines[1]
    assert "api:carol" in lines[1]
    async with sessionmaker() as session:
        row = await session.scalar(select(ApiToken).where(ApiToken.name == "ci"))
        assert row is not None
        assert row.token_hash == hash_token(token)
        assert row.user_id == "api:carol"
        assert await session.get(User, "api:carol") is not None
        dump = (await session.execute(text("SELECT t::text FROM api_tokens t"))).scalars().all()
    assert all(token not in line for line in dump)

    caller = await authenticate(sessionmaker, token)
    assert (caller.token_name, caller.user_id) == ("ci", "api:carol")


async def test_list_shows_status_and_last_use_and_revoke_refuses_the_token(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    lines: list[str] = []
    await tokens.show(sessionmaker, lines.append)
    assert lines == ["no API tokens: create one with `orchestrator tokens create NAME --user USER`"]

    await tokens.create(sessionmaker, lines.append, name="dave")  # user defaults to the name
    token = lines[-2]
    await tokens.create(sessionmaker, lines.append, name="erin-bot", user="erin")
    await authenticate(sessionmaker, token)
    assert await tokens.revoke(sessionmaker, lines.append, name="erin-bot") == 0
    assert lines[-1] == "revoked token erin-bot (api:erin); its next request gets 401"

    table: list[str] = []
    await tokens.show(sessionmaker, table.append)
    columns = ["NAME", "USER", "ROLE", "CREATED", "LAST USED", "EXPIRES", "STATUS"]
    assert re.split(r"\s{2,}", table[0]) == columns
    dave = dict(zip(columns, re.split(r"\s{2,}", table[1]), strict=True))
    erin = dict(zip(columns, re.split(r"\s{2,}", table[2]), strict=True))
    assert (dave["NAME"], dave["USER"], dave["ROLE"]) == ("dave", "api:dave", "member")
    assert dave["LAST USED"] != "never"  # used once above
    assert (dave["EXPIRES"], dave["STATUS"]) == ("never", "active")
    assert (erin["NAME"], erin["LAST USED"], erin["STATUS"]) == ("erin-bot", "never", "revoked")


async def test_an_expired_token_is_refused_with_when_it_expired_and_listed_as_expired(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    lines: list[str] = []
    await tokens.create(sessionmaker, lines.append, name="short", expires_in=timedelta(hours=1))
    token = lines[0]
    assert "expires " in lines[1] and "member token short" in lines[1]
    assert (await authenticate(sessionmaker, token)).user_id == "api:short"

    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(ApiToken)
            .where(ApiToken.name == "short")
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    with pytest.raises(InvalidToken, match=r"API token .short. expired at .* ask an operator"):
        await authenticate(sessionmaker, token)
    table: list[str] = []
    await tokens.show(sessionmaker, table.append)
    assert table[1].endswith("expired")


async def test_a_token_acts_with_the_lower_of_its_role_and_its_users(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Demoting or blocking a person takes effect on tokens issued before."""
    admin = await issue_token(sessionmaker, "root-laptop", "root", role=UserRole.ADMIN)
    member = await issue_token(sessionmaker, "root-ci", "root")
    assert (await authenticate(sessionmaker, admin.token)).is_admin
    assert not (await authenticate(sessionmaker, member.token)).is_admin

    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(User).where(User.id == "api:root").values(role=UserRole.MEMBER)
        )
    assert not (await authenticate(sessionmaker, admin.token)).is_admin

    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(User).where(User.id == "api:root").values(status=UserStatus.BLOCKED)
        )
    with pytest.raises(InvalidToken, match="api:root of API token 'root-ci' is blocked"):
        await authenticate(sessionmaker, member.token)


@pytest.mark.parametrize("text", ["30", "0d", "5y", "-1h", "1.5h"])
def test_durations_are_a_positive_count_and_a_unit(text: str) -> None:
    with pytest.raises(TokenError, match=r"e\.g\. 90m, 12h, 30d or 2w"):
        parse_duration(text)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(days=14)


async def test_token_errors_tell_the_operator_what_to_do(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    out: list[str] = []
    await tokens.create(sessionmaker, out.append, name="ci")
    with pytest.raises(TokenError, match="a token named 'ci' already exists"):
        await tokens.create(sessionmaker, out.append, name="ci", user="someone")
    with pytest.raises(TokenError, match="invalid token name"):
        await tokens.create(sessionmaker, out.append, name="has space")
    with pytest.raises(TokenError, match="no token named 'nope'"):
        await tokens.revoke(sessionmaker, out.append, name="nope")
    with pytest.raises(InvalidToken, match="unknown API token"):
        await authenticate(sessionmaker, TOKEN_PREFIX + "x" * 43)


def test_the_argparse_path_creates_lists_and_revokes(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    upgrade(database_url)
    monkeypatch.setenv("ORCH_NATS__URL", "nats://127.0.0.1:1")  # unused by `tokens`
    monkeypatch.setenv("ORCH_DATABASE__URL", database_url)
    parser = build_parser()

    def run(*argv: str) -> tuple[int, str, str]:
        args = parser.parse_args(["--state-dir", str(tmp_path), *argv])
        code = dispatch(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, _ = run("tokens", "create", "deploy-bot", "--user", "frank")
    assert code == 0
    token = out.splitlines()[0]
    assert token.startswith(TOKEN_PREFIX)
    code, out, _ = run("tokens", "create", "ops", "--role", "admin", "--expires-in", "30d")
    assert code == 0
    assert "admin token ops for api:ops (expires " in out

    code, out, _ = run("tokens", "list")
    assert code == 0
    assert "deploy-bot" in out and "api:frank" in out and token not in out
    ops_row = next(line for line in out.splitlines() if line.startswith("ops"))
    assert " admin " in ops_row and ops_row.count("never") == 1  # never used; it expires

    code, _, err = run("tokens", "create", "later", "--expires-in", "soon")
    assert code == 1
    assert "invalid duration 'soon'" in err

    assert run("tokens", "revoke", "deploy-bot")[0] == 0
    code, _, err = run("tokens", "revoke", "ghost")
    assert code == 1
    assert "orchestrator tokens revoke: no token named 'ghost'" in err

    async def refused() -> str:
        engine = make_engine(database_url, pool_size=1)
        try:
            with pytest.raises(InvalidToken) as raised:
                await authenticate(make_sessionmaker(engine), token)
            return str(raised.value)
        finally:
            await engine.dispose()

    assert "was revoked" in asyncio.run(refused())
