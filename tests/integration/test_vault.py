"""The Vault client against a real OpenBao: AppRole login, least privilege, expiry, redaction."""

from __future__ import annotations

import io
import uuid

import hvac
import pytest

from infra.logging import configure_logging, get_logger
from infra.stack.openbao_server import BootstrappedOpenBao
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
    with pytest.raises(VaultError, match="ORCH_VAULT__ROLE_ID"):
        VaultClient("http://127.0.0.1:1")
