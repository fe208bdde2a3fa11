"""The deploy account's preparation: idempotent, and a failing shadow-utils call says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.stack import deploy_account
from infra.stack.deploy_account import (
    DEPLOY_USER,
    DeployAccountError,
    _change_accounts,
    _password_field,
    ensure_deploy_account,
)


def test_the_password_field_is_read_from_the_shadow_file(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.write_text("root:$6$x:19000:0:99999:7:::\norch-deploy:*:20788::::::\n")
    assert _password_field("orch-deploy", shadow) == "*"
    assert _password_field("orch", shadow) is None


def test_a_prepared_account_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_deploy_account()
    assert _password_field(DEPLOY_USER) == "*"
    # Every stack start prepares the account; once prepared, the user database is not rewritten
    # (each rewrite takes its lock, which every other stack and deploy on the machine wants).
    calls: list[list[str]] = []
    monkeypatch.setattr(deploy_account, "_change_accounts", lambda argv, **_: calls.append(argv))
    assert ensure_deploy_account() == DEPLOY_USER
    assert calls == []


def test_a_failing_account_change_reports_the_commands_error() -> None:
    with pytest.raises(DeployAccountError, match="does not exist"):
        _change_accounts(["usermod", "--password", "*", "orch-no-such-user"])
