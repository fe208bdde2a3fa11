"""The deploy account's preparation: idempotent, and a failing shadow-utils call says why."""

from __future__ import annotations

import threading
import time
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
from infra.system_accounts import change_accounts


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


def test_stacks_starting_at_once_prepare_the_account_one_at_a_time(tmp_path: Path) -> None:
    """A second preparation waits on the lock while the first holds it (the kernel's lock table
    shows it blocked), then runs; this is what keeps a fresh machine's first stacks from
    racing each other through useradd and usermod."""
    lock = tmp_path / "prepare.lock"
    finished = threading.Event()

    def prepare() -> None:
        with deploy_account._preparing(lock):
            finished.set()

    with deploy_account._preparing(lock):
        inode = lock.stat().st_ino
        waiter = threading.Thread(target=prepare)
        waiter.start()
        deadline = time.monotonic() + 30
        while not _blocked_on(inode) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _blocked_on(inode), Path("/proc/locks").read_text()
        assert not finished.is_set()
    waiter.join(30)
    assert finished.is_set()


def _blocked_on(inode: int) -> bool:
    """A waiter (`->`) on a lock of this inode in /proc/locks."""
    return any(
        line.split()[1] == "->" and line.split()[6].endswith(f":{inode}")
        for line in Path("/proc/locks").read_text().splitlines()
        if len(line.split()) > 6
    )


def test_an_account_command_that_meets_a_locked_database_runs_again(tmp_path: Path) -> None:
    """shadow-utils' lock failure is retried; any other failure is returned at once."""
    tries = tmp_path / "tries"
    # Fails like useradd on a locked database twice, then succeeds.
    flaky = (
        f'echo x >> {tries}; [ "$(wc -l < {tries})" -gt 2 ] && exit 0; '
        'echo "useradd: cannot lock /etc/passwd; try again later." >&2; exit 1'
    )
    assert change_accounts(["sh", "-c", flaky]).returncode == 0
    assert len(tries.read_text().splitlines()) == 3

    other = tmp_path / "other"
    failing = f'echo x >> {other}; echo "useradd: invalid user name" >&2; exit 3'
    result = change_accounts(["sh", "-c", failing])
    assert (result.returncode, len(other.read_text().splitlines())) == (3, 1)
