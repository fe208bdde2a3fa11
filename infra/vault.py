"""Vault / OpenBao access: AppRole or Kubernetes login, token renewal, KV v2 secrets.

A process logs in with its AppRole (the local stack, compose) or, in Kubernetes, with its pod's
projected service account token against the `kubernetes` auth method, whose role is bound to
that service account and namespace and carries the same policy the AppRole would. Either way the
token lapses and the client logs in again by the same method.

hvac is synchronous and has no renewer, so calls run in a worker thread and `keep_renewed`
renews the token at two thirds of its TTL. Every value read is registered with the log
redactor, so a secret that slips into an exception message is still masked in the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions

from infra.settings import KUBERNETES_TOKEN_FILE, VaultSettings

T = TypeVar("T")


class SecretNotFound(LookupError):
    """The path holds no (live) secret; the message says what to store and where."""


class VaultError(RuntimeError):
    """Vault refused or failed; the message names the path and the reason, never a value."""


def _register(values: Mapping[str, Any]) -> None:
    # Imported lazily: logging is optional for short-lived tools that only write secrets.
    with contextlib.suppress(ImportError):
        from infra.logging import register_secret

        for value in values.values():
            if isinstance(value, str):
                register_secret(value)


async def _read_credential_file(path: Path, what: str, hint: str) -> str:
    try:
        return (await asyncio.to_thread(path.read_text)).strip()
    except OSError as exc:
        raise VaultError(f"{what} {path} cannot be read ({exc.strerror}); {hint}") from exc


class VaultClient:
    """One client per process: a token (operators, tests), an AppRole or a Kubernetes role."""

    def __init__(
        self,
        addr: str,
        *,
        token: str = "",
        role_id: str = "",
        secret_id: str = "",
        secret_id_file: Path | None = None,
        kubernetes_role: str = "",
        kubernetes_token_file: Path = KUBERNETES_TOKEN_FILE,
        kubernetes_mount: str = "kubernetes",
        kv_mount: str = "secret",
        transit_mount: str = "transit",
    ) -> None:
        if not token and not role_id and not kubernetes_role:
            raise VaultError(
                f"no Vault credentials for {addr}: set ORCH_VAULT__ROLE_ID and "
                "ORCH_VAULT__SECRET_ID_FILE, or ORCH_VAULT__AUTH=kubernetes and "
                "ORCH_VAULT__KUBERNETES_ROLE (or ORCH_VAULT__TOKEN for an operator)"
            )
        # hvac reads VAULT_ADDR only from the environment; the URL is always passed explicitly.
        self._client = hvac.Client(url=addr, token=token or None)
        self._role_id = role_id
        self._secret_id = secret_id
        # The local stack rotates secret ids by rewriting this file; each login reads it again.
        self._secret_id_file = secret_id_file
        self._kubernetes_role = kubernetes_role
        # Projected tokens expire and the kubelet replaces the file; each login reads it again.
        self._kubernetes_token_file = kubernetes_token_file
        self._kubernetes_mount = kubernetes_mount
        self._kv_mount = kv_mount
        self._transit_mount = transit_mount
        self._lease_seconds = 0
        self.addr = addr

    @classmethod
    def from_settings(cls, settings: VaultSettings) -> VaultClient:
        kubernetes = settings.auth == "kubernetes"
        return cls(
            settings.addr,
            token=settings.token.get_secret_value(),
            role_id="" if kubernetes else settings.role_id,
            secret_id=settings.secret_id.get_secret_value(),
            secret_id_file=None if kubernetes else settings.secret_id_file,
            kubernetes_role=settings.kubernetes_role if kubernetes else "",
            kubernetes_token_file=settings.kubernetes_token_file,
            kubernetes_mount=settings.kubernetes_mount,
            kv_mount=settings.kv_mount,
            transit_mount=settings.transit_mount,
        )

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    @property
    def _logs_in(self) -> bool:
        """Whether the token comes from a login (and a lapsed one is replaced by another)."""
        return bool(self._role_id or self._kubernetes_role)

    async def login(self) -> None:
        """AppRole or Kubernetes login (no-op for a token client); safe to call again."""
        if self._kubernetes_role:
            auth = await self._kubernetes_login()
        elif self._role_id:
            auth = await self._approle_login()
        else:
            return
        self._lease_seconds = int(auth.get("lease_duration") or 0)

    async def _kubernetes_login(self) -> dict[str, Any]:
        jwt = await _read_credential_file(
            self._kubernetes_token_file,
            "the service account token",
            "the pod mounts it as a projected volume with audience `vault` "
            "(ORCH_VAULT__KUBERNETES_TOKEN_FILE)",
        )
        role, mount = self._kubernetes_role, self._kubernetes_mount

        def _login() -> dict[str, Any]:
            result: dict[str, Any] = self._client.auth.kubernetes.login(
                role=role, jwt=jwt, mount_point=mount
            )
            return result

        try:
            auth: dict[str, Any] = (await self._call(_login))["auth"]
        except hvac.exceptions.VaultError as exc:
            raise VaultError(
                f"Kubernetes login to {self.addr} as role {role!r} failed: {exc}; the role must "
                "be bound to this pod's service account and namespace (see the chart's "
                "vault-roles ConfigMap)"
            ) from exc
        return auth

    async def _approle_login(self) -> dict[str, Any]:
        if self._secret_id_file is not None:
            self._secret_id = await _read_credential_file(
                self._secret_id_file,
                "the AppRole secret id file",
                "the local stack writes it before starting the process",
            )

        def _login() -> dict[str, Any]:
            result: dict[str, Any] = self._client.auth.approle.login(
                role_id=self._role_id, secret_id=self._secret_id
            )
            return result

        try:
            auth: dict[str, Any] = (await self._call(_login))["auth"]
        except hvac.exceptions.VaultError as exc:
            raise VaultError(f"AppRole login to {self.addr} failed: {exc}") from exc
        return auth

    async def keep_renewed(self) -> None:
        """Renew the token at 2/3 of its TTL forever; log in again if renewal is refused."""
        while True:
            await asyncio.sleep(max(self._lease_seconds * 2 / 3, 30))
            try:
                renewed = await self._call(self._client.auth.token.renew_self)
                self._lease_seconds = int(renewed["auth"].get("lease_duration") or 0)
            except hvac.exceptions.VaultError:
                await self.login()

    async def _call_logged_in(self, fn: Callable[[], T]) -> T:
        """Run `fn`; if a login's token expired meanwhile (403), log in again and retry once.

        Processes that never start `keep_renewed` still work past their token's TTL this way.
        """
        try:
            return await self._call(fn)
        except hvac.exceptions.Forbidden:
            if not self._logs_in:
                raise
            await self.login()
            return await self._call(fn)

    async def check_token(self) -> None:
        """Raise VaultError unless Vault answers and this client holds a valid token.

        A token self-lookup (every policy grants it). An AppRole token that lapsed is replaced by
        a fresh login first, as any other call would do, so what fails is what would fail a real
        read: Vault down, or the AppRole refused.
        """
        try:
            await self._call_logged_in(self._client.auth.token.lookup_self)
        except hvac.exceptions.VaultError as exc:
            raise VaultError(f"Vault at {self.addr} refused this process's token: {exc}") from exc
        except OSError as exc:  # requests' connection errors are OSErrors
            raise VaultError(
                f"Vault at {self.addr} does not answer ({type(exc).__name__})"
            ) from exc

    async def read_secret(self, path: str) -> dict[str, str]:
        """The latest version of the KV v2 secret at `path`."""

        def _read() -> dict[str, Any]:
            result: dict[str, Any] = self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self._kv_mount, raise_on_deleted_version=True
            )
            return result

        try:
            data = (await self._call_logged_in(_read))["data"]["data"]
        except hvac.exceptions.InvalidPath as exc:
            raise SecretNotFound(
                f"no secret at {self._kv_mount}/{path}; store it with "
                f"`orchestrator secrets set` or the API"
            ) from exc
        except hvac.exceptions.Forbidden as exc:
            raise VaultError(f"this process may not read {self._kv_mount}/{path}") from exc
        except hvac.exceptions.VaultError as exc:
            raise VaultError(f"reading {self._kv_mount}/{path} failed: {exc}") from exc
        values = {str(k): str(v) for k, v in data.items()}
        _register(values)
        return values

    async def write_secret(self, path: str, data: Mapping[str, str]) -> None:
        _register(data)

        def _write() -> None:
            self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=dict(data), mount_point=self._kv_mount
            )

        try:
            await self._call_logged_in(_write)
        except hvac.exceptions.VaultError as exc:
            raise VaultError(f"writing {self._kv_mount}/{path} failed: {exc}") from exc

    async def delete_secret(self, path: str) -> None:
        """Delete every version and the metadata at `path` (absent is fine)."""

        def _delete() -> None:
            with contextlib.suppress(hvac.exceptions.InvalidPath):
                self._client.secrets.kv.v2.delete_metadata_and_all_versions(
                    path=path, mount_point=self._kv_mount
                )

        try:
            await self._call_logged_in(_delete)
        except hvac.exceptions.VaultError as exc:
            raise VaultError(f"deleting {self._kv_mount}/{path} failed: {exc}") from exc

    async def list_secrets(self, path: str) -> list[str]:
        def _list() -> list[str]:
            try:
                result = self._client.secrets.kv.v2.list_secrets(
                    path=path, mount_point=self._kv_mount
                )
            except hvac.exceptions.InvalidPath:
                return []
            return [str(key) for key in result["data"]["keys"]]

        return await self._call_logged_in(_list)


def project_secret_path(project_id: str, name: str) -> str:
    return f"projects/{project_id}/{name}"


def server_secret_path(server_name: str) -> str:
    return f"servers/{server_name}"
