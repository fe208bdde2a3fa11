"""The Vault client against a real OpenBao: AppRole login, least privilege, expiry, redaction."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import hvac
import hvac.exceptions
import pytest

from infra.logging import configure_logging, get_logger
from infra.settings import VaultSettings
from infra.stack.openbao_server import (
    SECRET_ID_TTL,
    BootstrappedOpenBao,
    approle_login,
    bootstrap_openbao,
    destroy_secret_id,
    mint_secret_id,
)
from infra.vault import SecretNotFound, VaultClient, VaultError


def client_for(openbao: BootstrappedOpenBao, process: str) -> VaultClient:
    creds = openbao.credentials[process]
    return VaultClient(openbao.addr, role_id=creds.role_id, secret_id=creds.secret_id)


async def test_approle_client_reads_what_its_policy_allows(openbao: BootstrappedOpenBao) -> None:
    project = str(uuid.uuid4())
    api = client_for(openbao, "api")
    await api.login()
    await api.write_secret(f"projects/{project}/API_KEY", {"value": "s3cr3t-value-123"})

    deployer = client_for(openbao, "deployer")
    await deployer.login()
    assert await deployer.read_secret(f"projects/{project}/API_KEY") == {
        "value": "s3cr3t-value-123"
    }
    with pytest.raises(VaultError, match="may not read secret/platform/github"):
        await deployer.read_secret("platform/github")
    with pytest.raises(SecretNotFound, match="orchestrator secrets set"):
        await deployer.read_secret(f"projects/{project}/MISSING")


async def test_an_expired_token_logs_in_again(openbao: BootstrappedOpenBao) -> None:
    operator = VaultClient(openbao.addr, token=openbao.root_token)
    await operator.write_secret("platform/llm", {"api_key": "sk-expiring-test"})
    engineer = client_for(openbao, "engineer")
    await engineer.login()
    # What TTL expiry does to a token, done now: an operator revokes it under the client's feet.
    hvac.Client(url=openbao.addr, token=openbao.root_token).auth.token.revoke(
        engineer._client.token
    )
    assert await engineer.read_secret("platform/llm") == {"api_key": "sk-expiring-test"}


async def test_values_read_are_masked_in_logs(openbao: BootstrappedOpenBao) -> None:
    operator = VaultClient(openbao.addr, token=openbao.root_token)
    await operator.write_secret("platform/telegram", {"token": "123456:telegram-bot-token"})
    await operator.read_secret("platform/telegram")
    out = io.StringIO()
    configure_logging("test", stream=out)
    try:
        raise RuntimeError("telegram refused 123456:telegram-bot-token")
    except RuntimeError:
        get_logger("test").exception("send failed")
    assert "123456:telegram-bot-token" not in out.getvalue()
    assert "send failed" in out.getvalue()


async def test_no_credentials_is_a_clear_error() -> None:
    with pytest.raises(VaultError, match="ORCH_VAULT__SECRET_ID_FILE"):
        VaultClient("http://127.0.0.1:1")


async def test_a_secret_id_file_is_read_again_at_each_login(
    openbao: BootstrappedOpenBao, tmp_path: Path
) -> None:
    """The local stack rotates secret ids by rewriting the file; a re-login must pick it up."""
    root = hvac.Client(url=openbao.addr, token=openbao.root_token)
    first = mint_secret_id(root, "engineer")
    secret_file = tmp_path / "vault-secret-id"
    secret_file.write_text(first.secret_id + "\n")
    settings = VaultSettings(addr=openbao.addr, role_id=first.role_id, secret_id_file=secret_file)
    assert settings.secret_id.get_secret_value() == first.secret_id
    await root_write(openbao, "platform/llm", {"api_key": "sk-rotated-test"})
    engineer = VaultClient.from_settings(settings)
    await engineer.login()

    second = mint_secret_id(root, "engineer")
    secret_file.write_text(second.secret_id + "\n")
    destroy_secret_id(root, "engineer", first.accessor)
    root.auth.token.revoke(engineer._client.token)

    assert await engineer.read_secret("platform/llm") == {"api_key": "sk-rotated-test"}
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.auth.approle.login(role_id=first.role_id, secret_id=first.secret_id)


async def test_secret_ids_lapse(openbao: BootstrappedOpenBao) -> None:
    """No secret id stays valid forever (review M9): each carries its role's TTL."""
    root = hvac.Client(url=openbao.addr, token=openbao.root_token)
    bootstrap = openbao.credentials["repo"]
    unrotated = root.auth.approle.read_secret_id_accessor("repo", bootstrap.accessor)["data"]
    assert unrotated["secret_id_ttl"] == 720 * 3600

    # The local stack's settings: rotated by the launcher, so short-lived, and loopback only.
    bootstrap_openbao(
        openbao.addr, openbao.root_token, ["repo"],
        secret_id_ttl=SECRET_ID_TTL, secret_id_bound_cidrs=["127.0.0.1/32"],
    )  # fmt: skip
    issued = mint_secret_id(root, "repo")
    looked_up = root.auth.approle.read_secret_id_accessor("repo", issued.accessor)["data"]
    assert looked_up["secret_id_ttl"] == 2 * 3600
    assert looked_up["secret_id_num_uses"] == 0
    role = root.auth.approle.read_role("repo")["data"]
    assert role["secret_id_bound_cidrs"] == ["127.0.0.1/32"]
    assert approle_login(openbao.addr, issued)


def test_a_missing_secret_id_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"ORCH_VAULT__SECRET_ID_FILE=.*orchestrator up"):
        VaultSettings(role_id="r", secret_id_file=tmp_path / "absent")


async def root_write(openbao: BootstrappedOpenBao, path: str, data: dict[str, str]) -> None:
    await VaultClient(openbao.addr, token=openbao.root_token).write_secret(path, data)
