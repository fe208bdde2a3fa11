"""The bot token comes from Vault with each process's own AppRole; without it: console chat."""

from __future__ import annotations

import pytest

from consumers.notifier.app import TELEGRAM_VAULT_PATH, vault_token_source
from infra.settings import Settings
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.vault import VaultClient
from producers.telegram_bot.app import NoBotToken, read_bot_token


def settings_of(openbao: BootstrappedOpenBao, process: str) -> Settings:
    credentials = openbao.credentials[process]
    return Settings(
        vault={
            "addr": openbao.addr,
            "role_id": credentials.role_id,
            "secret_id": credentials.secret_id,
        }
    )


async def test_both_processes_read_the_token_with_their_own_role(
    openbao: BootstrappedOpenBao,
) -> None:
    operator = VaultClient(openbao.addr, token=openbao.root_token)
    await operator.delete_secret(TELEGRAM_VAULT_PATH)

    assert await vault_token_source(settings_of(openbao, "notifier"))() is None
    with pytest.raises(NoBotToken, match="no Telegram bot token in Vault at secret/platform"):
        await read_bot_token(settings_of(openbao, "telegram_bot"))

    await operator.write_secret(TELEGRAM_VAULT_PATH, {"token": "42:from-vault"})
    try:
        assert await vault_token_source(settings_of(openbao, "notifier"))() == "42:from-vault"
        assert await read_bot_token(settings_of(openbao, "telegram_bot")) == "42:from-vault"
    finally:
        await operator.delete_secret(TELEGRAM_VAULT_PATH)
