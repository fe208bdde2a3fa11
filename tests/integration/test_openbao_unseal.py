"""The compose stack's OpenBao keeper against a real `bao server` with raft storage on disk.

`python -m infra.stack.openbao_unseal watch` runs as docker-compose runs it, beside a server
nobody else opens (`RaftOpenBao`): it initialises the store once, unseals it after the server
restarts, and everything stored (secrets, AppRoles) is still there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import hvac
import pytest

from infra.stack.openbao_server import RaftOpenBao, bootstrap_openbao, policy_names

from .conftest import wait_for


def _health(addr: str) -> int:
    try:
        return httpx.get(f"{addr}/v1/sys/health", timeout=1, trust_env=False).status_code
    except httpx.HTTPError:
        return 0


def _keeper(addr: str, init_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "infra.stack.openbao_unseal", "watch", "--addr", addr,
         "--init-file", str(init_file), "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def keeper_processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.communicate(timeout=10)


async def test_store_is_initialised_once_and_unsealed_after_every_restart(
    tmp_path: Path, keys_dir: Path, keeper_processes: list[subprocess.Popen[str]]
) -> None:
    init_file = keys_dir / "init.json"
    server = RaftOpenBao(tmp_path / "openbao").start()
    try:
        assert _health(server.addr) == 501  # not initialised: nobody opened it but the keeper
        keeper_processes.append(_keeper(server.addr, init_file))
        await wait_for(lambda: _health(server.addr) == 200)
        assert init_file.stat().st_mode & 0o777 == 0o600
        first_init = init_file.read_text()
        root = json.loads(first_init)["root_token"]
        credentials = bootstrap_openbao(server.addr, root, policy_names())
        client = hvac.Client(url=server.addr, token=root)
        client.secrets.kv.v2.create_or_update_secret(
            "projects/p1/db", secret={"password": "kept"}, mount_point="secret"
        )

        server.stop()
        server.start()  # same data directory and port, as `docker compose restart openbao`
        await wait_for(lambda: _health(server.addr) == 200)

        assert init_file.read_text() == first_init  # unsealed with the same key, not re-created
        stored = client.secrets.kv.v2.read_secret_version(
            "projects/p1/db", mount_point="secret", raise_on_deleted_version=True
        )
        assert stored["data"]["data"] == {"password": "kept"}
        login = hvac.Client(url=server.addr).auth.approle.login(
            role_id=credentials["deployer"].role_id, secret_id=credentials["deployer"].secret_id
        )
        assert login["auth"]["policies"] == ["deployer"]
        root_token = subprocess.run(
            [sys.executable, "-m", "infra.stack.openbao_unseal", "root-token",
             "--init-file", str(init_file)],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout.strip()  # fmt: skip
        assert root_token == root
    finally:
        server.stop()
    keeper = keeper_processes[0]
    keeper.terminate()
    out, _ = keeper.communicate(timeout=10)
    assert "is initialised and unsealed" in out


async def test_a_store_without_its_key_file_or_with_a_wrong_key_stops_the_keeper_with_the_reason(
    tmp_path: Path, keys_dir: Path, keeper_processes: list[subprocess.Popen[str]]
) -> None:
    init_file = keys_dir / "init.json"
    with RaftOpenBao(tmp_path / "openbao") as server:
        keeper_processes.append(_keeper(server.addr, init_file))
        await wait_for(lambda: _health(server.addr) == 200)
        keeper = keeper_processes[0]
        keeper.terminate()
        keeper.communicate(timeout=10)
        init_file.unlink()
        server.stop()
        server.start()

        again = _keeper(server.addr, init_file)
        keeper_processes.append(again)
        _, err = again.communicate(timeout=60)
        assert again.returncode == 1
        assert f"{init_file} with its unseal key is missing" in err
        assert _health(server.addr) == 503  # still sealed: nothing was re-initialised

        # Another store's file: the key is refused, and the keeper says so instead of retrying.
        init_file.write_text(json.dumps({"unseal_key": "A" * 44, "root_token": "x"}))
        wrong = _keeper(server.addr, init_file)
        keeper_processes.append(wrong)
        _, err = wrong.communicate(timeout=60)
        assert wrong.returncode == 1
        assert f"refused the unseal key in {init_file}" in err
        assert _health(server.addr) == 503
