"""The embedded stack's servers answer real clients, stop cleanly and never outlive us."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hvac
import hvac.exceptions
import nats
import psycopg
import pytest
from nats.js.errors import NoStreamResponseError

from consumers.repo.git_cli import Git
from consumers.repo.local_forge import LocalForge
from infra.stack.credentials import DATABASE_URL_FILE, SECRET_ID_FILE
from infra.stack.git_daemon import GitDaemon, local_forge_push_environment
from infra.stack.launcher import PRELOADED_MODULES, LocalStack, run_up
from infra.stack.nats_server import NatsCluster, NatsServer
from infra.stack.openbao_server import (
    APPROLE_MOUNT,
    AppRoleCredentials,
    BootstrappedOpenBao,
    OpenBaoDev,
    approle_login,
    bootstrap_openbao,
)
from infra.stack.port_book import PortTaken
from infra.stack.postgres_server import PostgresServer
from infra.stack.process import (
    ManagedProcess,
    ServerStartError,
    child_environment,
    running_in_group,
    start_together,
)
from infra.stack.sshd_server import Sshd
from infra.stack.stack_info import read_stack_info
from infra.stack.supervisor import ChildSpec, Supervisor
from infra.stack.zygote_client import Zygote, ZygoteSpec

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _group_alive(pgid: int) -> bool:
    """Whether any live process is left in process group `pgid`."""
    return bool(running_in_group(pgid))


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


async def test_nats_accepts_jetstream_publishes(nats_server: NatsServer) -> None:
    client = await nats.connect(nats_server.url)
    try:
        jetstream = client.jetstream()
        stream = f"T{uuid.uuid4().hex}"
        await jetstream.add_stream(name=stream, subjects=[f"{stream}.>"])
        ack = await jetstream.publish(f"{stream}.hello", b"hi", headers={"Nats-Msg-Id": "m1"})
        duplicate = await jetstream.publish(f"{stream}.hello", b"hi", headers={"Nats-Msg-Id": "m1"})
        assert ack.stream == stream
        assert duplicate.duplicate
        assert (await jetstream.stream_info(stream)).state.messages == 1
    finally:
        await client.close()


async def test_nats_restart_keeps_port_and_streams(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as server:
        client = await nats.connect(server.url)
        await client.jetstream().add_stream(name="KEEP", subjects=["keep.>"])
        await client.jetstream().publish("keep.one", b"1")
        await client.close()
        port = server.port

        server.stop()
        server.start()

        assert server.port == port
        client = await nats.connect(server.url)
        try:
            message = await client.jetstream().get_msg("KEEP", 1)
            assert message.data == b"1"
        finally:
            await client.close()


async def test_nats_cluster_replicates_a_stream(tmp_path: Path) -> None:
    with NatsCluster(tmp_path / "cluster", size=3) as cluster:
        client = await nats.connect(servers=cluster.urls)
        try:
            jetstream = client.jetstream()
            # start() returned, so a meta leader exists and R3 placement works at once; the
            # stream's own leader and its interest on the node we talk to follow it.
            await jetstream.add_stream(name="R3", subjects=["r3.>"], num_replicas=3)
            deadline = time.monotonic() + 60
            while True:
                try:
                    await jetstream.publish("r3.x", b"x")
                    break
                except NoStreamResponseError:
                    assert time.monotonic() < deadline, "the R3 stream never got a leader"
                    await asyncio.sleep(0.1)
            info = await jetstream.stream_info("R3")
            assert info.config.num_replicas == 3
            assert info.state.messages == 1
        finally:
            await client.close()


def test_postgres_serves_the_application_role(postgres_server: PostgresServer) -> None:
    plain_url = postgres_server.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain_url) as conn:
        row = conn.execute("SELECT current_user, current_database()").fetchone()
    assert row == ("orchestrator", "orchestrator")


def test_postgres_refuses_a_connection_without_the_password(
    postgres_server: PostgresServer,
) -> None:
    """Nothing is trusted: not loopback TCP, not the socket, not the superuser."""
    for host in ("127.0.0.1", str(postgres_server.socket_dir)):
        for user in ("orchestrator", "postgres"):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(
                    host=host,
                    port=postgres_server.port,
                    user=user,
                    dbname="postgres",
                    password="",
                    passfile=os.devnull,
                    connect_timeout=5,
                )
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1",
            port=postgres_server.port,
            user="orchestrator",
            dbname="orchestrator",
            password="guessed",
            connect_timeout=5,
        )
    assert postgres_server.superuser_password_file.stat().st_mode & 0o777 == 0o600
    assert "trust" not in _hba_methods(postgres_server)


def _hba_methods(server: PostgresServer) -> set[str]:
    """The authentication methods pg_hba.conf names (its last column on every rule)."""
    lines = (server.cluster_dir / "pg_hba.conf").read_text().splitlines()
    return {line.split()[-1] for line in lines if line.strip() and not line.startswith("#")}


def test_postgres_gives_the_application_role_a_new_password_each_start(
    postgres_dir: Path,
) -> None:
    with PostgresServer(postgres_dir, fsync=False) as server:
        first_url = _plain(server.url)
        with psycopg.connect(first_url) as conn:
            conn.execute("SELECT 1")
    with PostgresServer(postgres_dir, fsync=False) as restarted:
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(first_url.replace(f":{server.port}/", f":{restarted.port}/"))
        with psycopg.connect(_plain(restarted.url)) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("orchestrator",)


def test_postgres_killed_restarts_though_its_old_pid_now_belongs_to_another_process(
    postgres_dir: Path,
) -> None:
    """After a SIGKILL the lock file names a pid that a busy host soon hands to another
    process; postgres alone would refuse to start ("lock file postmaster.pid already exists")."""
    server = PostgresServer(postgres_dir, fsync=False).start()
    server.kill()
    lock = server.cluster_dir / "postmaster.pid"
    assert lock.exists()  # what a crash leaves behind
    # Postgres's own check (`kill(pid, 0)`) passes over a process of another user; another
    # postgres process (a backend of another cluster) is what kept it from starting.
    unrelated = subprocess.Popen(["sleep", "60"], user=server._run_as())
    try:
        for stale in [lock, *server.socket_dir.glob(".s.PGSQL.*.lock")]:
            lines = stale.read_text().split("\n")
            stale.write_text("\n".join([str(unrelated.pid), *lines[1:]]))  # the pid, reused
        with server:
            with psycopg.connect(_plain(server.url)) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            # A live postmaster of this cluster still keeps a second one out.
            with pytest.raises(ServerStartError, match=r"postmaster\.pid"):
                PostgresServer(postgres_dir, fsync=False, port=server.port + 1).start()
    finally:
        unrelated.kill()
        unrelated.wait()


def _plain(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://")


def test_no_secret_is_in_any_command_line(
    openbao: BootstrappedOpenBao, postgres_server: PostgresServer
) -> None:
    """`ps` shows every user every command line: the dev root token and passwords stay out."""
    secrets_in_use = [
        openbao.root_token,
        *(credentials.secret_id for credentials in openbao.credentials.values()),
        postgres_server.superuser_password_file.read_text().strip(),
        _password_of(postgres_server.url),
    ]
    command_lines = _all_command_lines()
    assert any(b"bao" in line and b"-dev" in line for line in command_lines)
    for secret in secrets_in_use:
        assert len(secret) >= 16
        assert not any(secret.encode() in line for line in command_lines)


def _password_of(sqlalchemy_url: str) -> str:
    from sqlalchemy.engine import make_url

    password = make_url(sqlalchemy_url).password
    assert password
    return password


def _all_command_lines() -> list[bytes]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                lines.append((entry / "cmdline").read_bytes())
    return lines


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def test_database_url_is_a_fresh_database(database_url: str) -> None:
    plain_url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain_url) as conn:
        conn.execute("CREATE TABLE t (id int)")
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (1,)


def test_openbao_approles_are_least_privilege(openbao: BootstrappedOpenBao) -> None:
    def client_for(process: str) -> hvac.Client:
        token = approle_login(openbao.addr, openbao.credentials[process])
        return hvac.Client(url=openbao.addr, token=token)

    operator = client_for("operator")
    operator.secrets.kv.v2.create_or_update_secret(
        path="platform/llm", secret={"api_key": "sk-test"}, mount_point="secret"
    )

    engineer = client_for("engineer")
    secret = engineer.secrets.kv.v2.read_secret_version(
        path="platform/llm", mount_point="secret", raise_on_deleted_version=True
    )
    assert secret["data"]["data"] == {"api_key": "sk-test"}

    analyst = client_for("analyst")
    assert analyst.auth.token.lookup_self()["data"]["policies"] == ["analyst"]
    assert analyst.auth.token.renew_self()["auth"]["renewable"]
    # The analyst reads the LLM key (for its HTTP client) and nothing else.
    with pytest.raises(hvac.exceptions.Forbidden):
        analyst.secrets.kv.v2.read_secret_version(
            path="platform/github", mount_point="secret", raise_on_deleted_version=True
        )
    with pytest.raises(hvac.exceptions.Forbidden):
        analyst.secrets.kv.v2.read_secret_version(
            path="projects/p1/db_password", mount_point="secret", raise_on_deleted_version=True
        )

    # The indexer reads its own read-only GitHub token, never the one that pushes, and the LLM
    # key it embeds with.
    operator.secrets.kv.v2.create_or_update_secret(
        path="platform/github_read", secret={"token": "ro-test"}, mount_point="secret"
    )
    indexer = client_for("indexer")
    read_only = indexer.secrets.kv.v2.read_secret_version(
        path="platform/github_read", mount_point="secret", raise_on_deleted_version=True
    )
    assert read_only["data"]["data"] == {"token": "ro-test"}
    for path in ("platform/github", "projects/p1/db_password"):
        with pytest.raises(hvac.exceptions.Forbidden):
            indexer.secrets.kv.v2.read_secret_version(
                path=path, mount_point="secret", raise_on_deleted_version=True
            )

    api = client_for("api")
    api.secrets.kv.v2.create_or_update_secret(
        path="projects/p1/db_password", secret={"value": "pw"}, mount_point="secret"
    )
    with pytest.raises(hvac.exceptions.Forbidden):
        api.secrets.kv.v2.read_secret_version(
            path="projects/p1/db_password", mount_point="secret", raise_on_deleted_version=True
        )


def test_openbao_bootstrap_is_idempotent(openbao: BootstrappedOpenBao) -> None:
    again = bootstrap_openbao(openbao.addr, openbao.root_token, ["deployer"])
    assert again["deployer"].role_id == openbao.credentials["deployer"].role_id
    assert approle_login(openbao.addr, again["deployer"])


def test_two_stacks_starting_at_once_each_come_up_on_ports_of_their_own() -> None:
    """Both see 4222, 5432 and 8200 free; one takes them, the other free ports, and both run.

    Unlocked, the second stack's PostgreSQL died on "address already in use" and its Vault
    probe reached the first stack's Vault ("already initialized").
    """
    dirs = [Path(tempfile.mkdtemp(prefix="orchestrator-test-twin-")) for _ in range(2)]
    stacks = [LocalStack(directory) for directory in dirs]
    for directory in dirs:
        directory.chmod(0o711)  # as `orchestrator up` leaves its state directory
    # The servers die with the thread that spawned them: the pool lives until they are stopped.
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        starts = [pool.submit(stack.start) for stack in stacks]
        for start in starts:
            start.result(timeout=180)
        first, second = stacks
        assert {first.nats.port, first.postgres.port, first.openbao.port}.isdisjoint(
            {second.nats.port, second.postgres.port, second.openbao.port}
        )
        for stack in stacks:  # each password and root token is its own stack's: its own servers
            with psycopg.connect(stack.postgres.url.replace("+psycopg", "")) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            vault = hvac.Client(url=stack.openbao.addr, token=stack.openbao.root_token)
            assert vault.is_authenticated()
    finally:
        for stack in stacks:
            stack.stop()
        pool.shutdown()
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)


def _listening_ports(stack: LocalStack) -> dict[str, int]:
    return {
        "nats": stack.nats.port,
        "nats_monitor": stack.nats.monitor_port,
        "postgres": stack.postgres.port,
        "openbao": stack.openbao.port,
        "sshd": stack.sshd.port,
        "git": stack.git.port,
    }


def test_a_restarted_stack_keeps_its_ports_and_no_stack_takes_them_while_it_is_down() -> None:
    """The git daemon's port is in every repository URL a stack stored: it must come back on it.

    A stack killed while holding 9418 and restarted after another stack started came back on
    a random port, and every build of its projects failed to clone the old URL.
    """
    dirs = [Path(tempfile.mkdtemp(prefix="orchestrator-test-restart-")) for _ in range(2)]
    for directory in dirs:
        directory.chmod(0o711)  # as `orchestrator up` leaves its state directory
    running: list[LocalStack] = []
    try:
        first = LocalStack(dirs[0])
        running.append(first)
        first.start()
        before = _listening_ports(first)
        first.stop()

        other = LocalStack(dirs[1])  # starts while the first is down
        running.append(other)
        other.start()
        assert set(_listening_ports(other).values()).isdisjoint(before.values())

        again = LocalStack(dirs[0])
        running.append(again)
        again.start()
        assert _listening_ports(again) == before
        again.stop()

        with socket.socket() as squatter:  # someone else took the port the records name
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", before["git"]))
            squatter.listen()
            blocked = LocalStack(dirs[0])
            running.append(blocked)
            with pytest.raises(PortTaken, match=f"port {before['git']} of this stack's git"):
                blocked.start()
    finally:
        for stack in running:
            stack.stop()
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)


def test_each_start_gets_a_fresh_secret_id_and_replaced_ones_stop_working(
    tmp_path: Path,
) -> None:
    """The launcher's credential delivery: one live secret id per child, plus one in rotation."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    stack = LocalStack(state_dir)
    stack.openbao = OpenBaoDev(tmp_path / "openbao")
    with stack.openbao:
        addr = stack.openbao.addr
        stack.credentials = bootstrap_openbao(addr, stack.openbao.root_token, ["repo"])
        role_id = stack.credentials["repo"].role_id
        private = state_dir / "credentials" / "repo"

        def issued() -> AppRoleCredentials:
            return AppRoleCredentials(role_id, (private / "vault-secret-id").read_text().strip())

        def works(credentials: AppRoleCredentials) -> bool:
            try:
                approle_login(addr, credentials)
            except hvac.exceptions.InvalidRequest:
                return False
            return True

        stack.issue_credentials("repo")  # the first start
        first = issued()
        assert works(first)
        assert not works(stack.credentials["repo"])  # the bootstrap's, never handed out
        assert (private / "database-url").read_text().strip() == stack.postgres.url
        for path in (private / "vault-secret-id", private / "database-url"):
            assert path.stat().st_mode & 0o777 == 0o600
        assert private.stat().st_mode & 0o777 == 0o700

        stack.issue_credentials("repo")  # a restart: the dead process's secret id goes
        second = issued()
        assert second.secret_id != first.secret_id
        assert not works(first)
        assert works(second)

        stack.rotate_credentials()  # the running process may have read the file just before
        third = issued()
        assert works(second)
        assert works(third)
        stack.rotate_credentials()
        assert not works(second)
        assert works(issued())


def test_sshd_accepts_the_client_key_with_a_pinned_host_key(
    sshd_server: Sshd, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd_server.known_hosts_line + "\n")
    assert sshd_server.client_private_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")

    ssh = [
        "ssh", "-F", "/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-i", str(sshd_server.client_key_path),
        "-p", str(sshd_server.port),
    ]  # fmt: skip
    result = subprocess.run(
        [*ssh, f"{sshd_server.user}@127.0.0.1", "echo", "deployed"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "deployed"


def _git_output(*args: str) -> str:
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def _git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    """Run git as an anonymous client would; returns its stderr (asserts success if `check`)."""
    result = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.org", *args],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0, "git succeeded where it should have been refused"
    return result.stderr


async def test_git_daemon_refuses_anonymous_pushes_and_the_forge_pushes_by_path(
    git_daemon: GitDaemon, tmp_path: Path
) -> None:
    """Anyone on the machine reaches the daemon's port, so it serves reads only."""
    forge = LocalForge(git_daemon.data_dir, git_daemon.base_url)
    hosted = await forge.ensure_repo(f"demo-{uuid.uuid4().hex[:8]}", "demo")
    work = tmp_path / "work"
    _git("init", "--initial-branch=main", str(work))
    (work / "README.md").write_text("hello\n")
    _git("add", "README.md", cwd=work)
    _git("commit", "-m", "first", cwd=work)

    refused = _git("push", hosted.clone_url, "main", cwd=work, check=False)
    assert "service not enabled" in refused
    # A repository's own configuration cannot switch pushes back on.
    bare = git_daemon.path_for(hosted.name)
    _git("--git-dir", str(bare), "config", "daemon.receivepack", "true")
    assert "service not enabled" in _git("push", hosted.clone_url, "main", cwd=work, check=False)

    # The repo step's way: the same URL, pushed to the bare repository's path.
    await Git(work, config=await forge.git_auth_config())("push", hosted.clone_url, "main")
    clone = tmp_path / "clone"
    _git("clone", hosted.clone_url, str(clone))
    assert (clone / "README.md").read_text() == "hello\n"

    # The engineer's way: its workspace's git gets the same rewrite as GIT_CONFIG_* variables,
    # from the forge location the launcher gives every process.
    (clone / "README.md").write_text("hello again\n")
    _git("commit", "-am", "second", cwd=clone)
    push_env = local_forge_push_environment(
        tmp_path / "unused-state-dir",
        {
            "ORCH_REPO_LOCAL_BASE": str(git_daemon.data_dir),
            "ORCH_REPO_DAEMON_URL": git_daemon.base_url,
        },
    )
    pushed = subprocess.run(
        ["git", "push", hosted.clone_url, "main"],
        cwd=clone,
        env={**os.environ, **push_env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert pushed.returncode == 0, pushed.stderr
    assert _git_output("--git-dir", str(bare), "log", "-1", "--format=%s") == "second"
    assert git_daemon.data_dir.stat().st_mode & 0o777 == 0o700


#: What an operator may have exported when running `orchestrator up`; no child may see any of it.
OPERATOR_VARIABLES = {
    "OPERATOR_CLOUD_KEY": "operator-only-value-1234",
    "ORCH_VAULT__TOKEN": "operator-vault-token-1234",
    "ORCH_VAULT__SECRET_ID": "operator-secret-id-1234",
    "ORCH_DATABASE__URL": "postgresql://operator:operator-password-1234@db/x",
}


def _stack_children(state_dir: Path) -> dict[str, int]:
    """Process name → pid of the supervised children of the stack running from `state_dir`.

    A child forked from the zygote shows the zygote's command line and environment; its name
    is its `comm`.
    """
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = _environ(int(entry.name))
            forked = b"infra.stack.zygote" in (entry / "cmdline").read_bytes()
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if env.get("ORCH_STATE_DIR") != str(state_dir):
            continue
        if "ORCH_PROCESS_NAME" in env:
            found[env["ORCH_PROCESS_NAME"]] = int(entry.name)
        elif forked and name != "zygote":
            found[name] = int(entry.name)
    return found


def _assert_children_hold_only_their_own_credentials(state_dir: Path, vault_addr: str) -> None:
    """Secrets reach each child through its private files, never argv or an inherited env."""
    assert _wait_until(lambda: {"scheduler", "api"} <= set(_stack_children(state_dir)), 30)
    command_lines = _all_command_lines()
    environments = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                environments.append((entry / "environ").read_bytes())
    private = state_dir / "credentials"
    assert private.stat().st_mode & 0o777 == 0o700
    # OpenBao keeps its store on disk; its unseal key and root token are in one private file.
    init = state_dir / "openbao" / "init.json"
    assert init.stat().st_mode & 0o777 == 0o600
    root_token = json.loads(init.read_text())["root_token"]
    vault = hvac.Client(url=vault_addr, token=root_token)
    for name, pid in _stack_children(state_dir).items():
        # What anyone may read of the process (a forked child's is the zygote's).
        env = _environ(pid)
        assert not set(OPERATOR_VARIABLES) & set(env), name
        assert not any(value in str(env) for value in OPERATOR_VARIABLES.values()), name
        secret_file = private / name / SECRET_ID_FILE
        url_file = private / name / DATABASE_URL_FILE
        assert secret_file.parent.stat().st_mode & 0o777 == 0o700
        for path in (secret_file, url_file):
            assert path.stat().st_mode & 0o777 == 0o600, path
        secret_id = secret_file.read_text().strip()
        password = _password_of(url_file.read_text().strip())
        for secret in (secret_id, password):
            assert not any(secret.encode() in line for line in command_lines), name
            assert not any(secret.encode() in environ for environ in environments), name
        role_id = vault.auth.approle.read_role_id(name, mount_point=APPROLE_MOUNT)["data"]
        credentials = AppRoleCredentials(role_id=role_id["role_id"], secret_id=secret_id)
        assert approle_login(vault_addr, credentials)
        assert (state_dir / "logs" / f"{name}.log").stat().st_mode & 0o777 == 0o600
    assert len(root_token) >= 16
    assert not any(root_token.encode() in line for line in command_lines)
    assert not any(root_token.encode() in environ for environ in environments)
    assert state_dir.stat().st_mode & 0o777 == (0o711 if os.geteuid() == 0 else 0o700)
    for directory in ("logs", "git"):
        assert (state_dir / directory).stat().st_mode & 0o777 == 0o700, directory
    for file in ("env", "prometheus-targets.json"):
        assert (state_dir / file).stat().st_mode & 0o777 == 0o600, file


@pytest.fixture
def postgres_dir() -> Iterator[Path]:
    """A data directory the postgres user can reach (pytest's temp tree is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="orchestrator-test-postgres-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


SERVER_FACTORIES: dict[str, Callable[[Path, Path], ManagedProcess]] = {
    "nats": lambda tmp, _: NatsServer(tmp / "nats"),
    "postgres": lambda _, pg_dir: PostgresServer(pg_dir, fsync=False),
    "openbao": lambda tmp, _: OpenBaoDev(tmp / "openbao"),
    "sshd": lambda tmp, _: Sshd(tmp / "sshd"),
    "git": lambda tmp, _: GitDaemon(tmp / "git"),
}


@pytest.mark.parametrize("kind", SERVER_FACTORIES)
def test_server_stop_leaves_no_process(kind: str, tmp_path: Path, postgres_dir: Path) -> None:
    server = SERVER_FACTORIES[kind](tmp_path, postgres_dir)
    server.start()
    pid = server.pid
    assert pid is not None
    server.stop()
    assert not _alive(pid)
    assert not _group_alive(pid)


def test_start_failure_quotes_the_server_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = NatsServer(tmp_path / "nats", port=taken.getsockname()[1])
        with pytest.raises(ServerStartError, match="address already in use"):
            server.start()
    assert not server.running


def test_servers_started_together_outlive_the_threads_that_waited_for_them(
    tmp_path: Path, postgres_dir: Path
) -> None:
    """Waiting happens in pool threads, which are gone when `start_together` returns; the
    servers live on because they were forked from this thread (PDEATHSIG follows the forking
    thread). A failure is raised after the others are up, and the caller stops them."""
    servers = [factory(tmp_path, postgres_dir) for factory in SERVER_FACTORIES.values()]
    timings: dict[str, float] = {}
    try:
        start_together(servers, timings)
        assert all(server.running for server in servers)
        assert set(timings) == {server.name for server in servers}
    finally:
        for server in servers:
            server.stop()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        failing = NatsServer(tmp_path / "taken", port=taken.getsockname()[1])
        fine = GitDaemon(tmp_path / "git2")
        try:
            with pytest.raises(ServerStartError, match="address already in use"):
                start_together([failing, fine])
            assert fine.running
        finally:
            fine.stop()
            failing.stop()


def _python_child(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_server_dies_with_a_killed_parent(tmp_path: Path) -> None:
    pid_file = tmp_path / "nats.pid"
    parent = subprocess.Popen(
        _python_child(f"""
            import pathlib, time
            from infra.stack.nats_server import NatsServer
            server = NatsServer(pathlib.Path({str(tmp_path / "nats")!r})).start()
            pathlib.Path({str(pid_file)!r}).write_text(str(server.pid))
            time.sleep(60)
        """),
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    try:
        assert _wait_until(pid_file.exists, timeout=20)
        server_pid = int(pid_file.read_text())
        assert _alive(server_pid)
        parent.kill()
        assert _wait_until(lambda: not _alive(server_pid))
    finally:
        parent.kill()
        parent.wait()


async def test_supervisor_restarts_a_child_that_exits(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs", initial_backoff=0.05, max_backoff=0.2)
    async with supervisor:
        supervisor.start(ChildSpec("flaky", _python_child("import sys; sys.exit(3)")))
        deadline = time.monotonic() + 10
        while supervisor.restarts_of("flaky") < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert supervisor.restarts_of("flaky") >= 3


async def test_supervisor_stop_kills_every_child(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs", grace_period=0.5)
    stubborn = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """
    supervisor.start(ChildSpec("sleeper", _python_child("import time; time.sleep(60)")))
    supervisor.start(ChildSpec("stubborn", _python_child(stubborn)))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "ready" not in _read(supervisor.log_path("stubborn")):
        await asyncio.sleep(0.05)
    pids = [supervisor.pid_of("sleeper"), supervisor.pid_of("stubborn")]
    assert all(pid is not None and _alive(pid) for pid in pids)

    await supervisor.stop()

    assert not any(pid is not None and _alive(pid) for pid in pids)


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("forked", [False, True], ids=["exec", "forked"])
def test_supervisor_killed_with_sigkill_leaves_no_child(tmp_path: Path, forked: bool) -> None:
    pid_file = tmp_path / "child.pid"
    child_code = (
        f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()));"
        " time.sleep(60)"
    )
    # Forked: the supervisor's death ends the zygote, whose death ends the child.
    (tmp_path / "child.py").write_text(child_code)
    zygote = (
        f"Zygote(ZygoteSpec((), cwd=pathlib.Path({str(PROJECT_ROOT)!r})), logs / 'zygote.log')"
        if forked
        else "None"
    )
    supervisor_script = f"""
        import asyncio, pathlib, sys
        from infra.stack.supervisor import ChildSpec, Supervisor
        from infra.stack.zygote_client import Zygote, ZygoteSpec

        async def main() -> None:
            logs = pathlib.Path({str(tmp_path / "logs")!r})
            supervisor = Supervisor(logs, zygote={zygote})
            supervisor.start(
                ChildSpec(
                    "child",
                    [sys.executable, "-c", {child_code!r}],
                    cwd=pathlib.Path({str(tmp_path)!r}),
                    module="child",
                )
            )
            await asyncio.sleep(60)

        asyncio.run(main())
    """
    parent = subprocess.Popen(
        _python_child(supervisor_script), env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    )
    try:
        assert _wait_until(pid_file.exists, timeout=20)
        child_pid = int(pid_file.read_text())
        assert _alive(child_pid)
        forked_from_zygote = (
            b"infra.stack.zygote" in Path(f"/proc/{child_pid}/cmdline").read_bytes()
        )
        assert forked_from_zygote == forked
        parent.send_signal(signal.SIGKILL)
        assert _wait_until(lambda: not _alive(child_pid))
    finally:
        parent.kill()
        parent.wait()


# A module a forked child runs: it reports what it was given, then does what `ACT` says.
_REPORTER = """
import json, os, signal, subprocess, sys, threading, time
report = {
    "env": dict(os.environ),
    "pid": os.getpid(),
    "ppid": os.getppid(),
    "sid": os.getsid(0),
    "cwd": os.getcwd(),
    "argv": sys.argv,
    "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
    "stdin": os.readlink("/proc/self/fd/0"),
    "threads": threading.active_count(),
    "preloaded": "infra.bus.runtime" in sys.modules,
}
act = os.environ.get("ACT", "")
if act == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    report["grandchild"] = subprocess.Popen(["sleep", "60"]).pid
with open(os.environ["REPORT"], "a") as out:
    out.write(json.dumps(report) + "\\n")
print("reported", flush=True)
if act.startswith("exit"):
    sys.exit(int(act[4:]))
if act == "raise":
    raise RuntimeError("the module failed")
if act == "stubborn":
    signal.pause()
time.sleep(60)
"""


def _reports(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in _read(path).splitlines()]


async def _eventually(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return condition()


def _forked(name: str, tmp_path: Path, act: str) -> ChildSpec:
    """A child forked from the zygote running `_REPORTER` (argv is what runs without one)."""
    (tmp_path / "reporter.py").write_text(_REPORTER)
    report = tmp_path / f"{name}.jsonl"
    return ChildSpec(
        name,
        [sys.executable, "-m", "reporter"],
        env={"ACT": act, "REPORT": str(report)},
        cwd=tmp_path,
        module="reporter",
    )


def _zygote(tmp_path: Path, *preload: str) -> Zygote:
    spec = ZygoteSpec(preload, env={"ZYGOTE_ONLY": "1"}, cwd=PROJECT_ROOT)
    return Zygote(spec, tmp_path / "logs" / "zygote.log")


async def test_a_forked_child_gets_exactly_its_environment_and_reports_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPERATOR_ONLY", "not for children")
    spec = _forked("exits", tmp_path, "exit7")
    zygote = _zygote(tmp_path, *PRELOADED_MODULES)
    environment = child_environment(spec.env)
    try:
        child = await zygote.spawn("exits", "reporter", environment, tmp_path, tmp_path / "c.log")
        assert await asyncio.wait_for(child.wait(), 30) == 7
        (report,) = _reports(tmp_path / "exits.jsonl")
        assert report["ppid"] == zygote.pid
        failing = await zygote.spawn(
            "raises", "reporter", {**environment, "ACT": "raise"}, tmp_path, tmp_path / "r.log"
        )
        assert await asyncio.wait_for(failing.wait(), 30) == 1
    finally:
        await zygote.stop(5)
    # Exactly what the supervisor computed: nothing of the zygote's or the operator's own.
    assert report["env"] == environment
    assert "ZYGOTE_ONLY" not in environment and "OPERATOR_ONLY" not in environment
    assert report["sid"] == report["pid"]
    assert report["cwd"] == str(tmp_path)
    assert report["argv"] == [str(tmp_path / "reporter.py")]
    assert report["fds"] == [0, 1, 2, 3]  # 3 is the listing's own
    assert report["stdin"] == os.devnull
    assert report["threads"] == 1
    assert report["preloaded"] is True
    assert "reported" in _read(tmp_path / "c.log")
    assert "RuntimeError: the module failed" in _read(tmp_path / "r.log")


async def test_a_spawn_cancelled_while_the_zygote_forks_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    """The supervisor stopping mid-restart cancels a spawn whose answer is still on its way:
    the answer is dropped quietly (no InvalidStateError out of the reader) and the child
    forked for it is killed by `stop`."""
    spec = _forked("orphan", tmp_path, "sleep")
    zygote = _zygote(tmp_path)
    try:
        await zygote.spawn(
            "warm",
            "reporter",
            child_environment({"ACT": "exit0", "REPORT": str(tmp_path / "warm.jsonl")}),
            tmp_path,
            tmp_path / "w.log",
        )
        spawning = asyncio.ensure_future(
            zygote.spawn(
                "orphan", "reporter", child_environment(spec.env), tmp_path, tmp_path / "o.log"
            )
        )
        deadline = time.monotonic() + 30
        while not zygote._requests:  # sent, not yet answered: the zygote is forking
            assert time.monotonic() < deadline, "the spawn never reached the zygote"
            await asyncio.sleep(0)
        spawning.cancel()
        with pytest.raises(asyncio.CancelledError):
            await spawning
        report = tmp_path / "orphan.jsonl"
        assert await _eventually(lambda: len(_reports(report)) == 1)
        (started,) = _reports(report)
        assert _alive(started["pid"])
    finally:
        await zygote.stop(5)
    assert await _eventually(lambda: not _alive(started["pid"]))


async def test_supervisor_restarts_a_forked_child_that_crashes(tmp_path: Path) -> None:
    supervisor = Supervisor(
        tmp_path / "logs", initial_backoff=0.05, max_backoff=0.2, zygote=_zygote(tmp_path)
    )
    async with supervisor:
        supervisor.start(_forked("flaky", tmp_path, "exit3"))
        assert await _eventually(lambda: supervisor.restarts_of("flaky") >= 3)
        zygote = supervisor.zygote_pid
    reports = _reports(tmp_path / "flaky.jsonl")
    assert len(reports) >= 3
    assert {report["ppid"] for report in reports} == {zygote}


async def test_a_killed_zygote_takes_its_children_and_both_come_back(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs", initial_backoff=0.05, zygote=_zygote(tmp_path))
    async with supervisor:
        supervisor.start(_forked("one", tmp_path, "sleep"))
        supervisor.start(_forked("two", tmp_path, "sleep"))
        report = tmp_path / "one.jsonl"
        assert await _eventually(lambda: len(_reports(report)) == 1)
        assert await _eventually(lambda: len(_reports(tmp_path / "two.jsonl")) == 1)
        # A forked child runs (and reports) before the zygote's answer gives the supervisor its
        # pid; under load that answer came after the report.
        assert await _eventually(
            lambda: None not in (supervisor.pid_of("one"), supervisor.pid_of("two"))
        )
        old_zygote = supervisor.zygote_pid
        old = [supervisor.pid_of("one"), supervisor.pid_of("two")]
        assert old_zygote is not None and all(pid is not None for pid in old)

        os.kill(old_zygote, signal.SIGKILL)

        assert await _eventually(lambda: not any(_alive(pid) for pid in old if pid))
        assert await _eventually(
            lambda: all(supervisor.restarts_of(name) == 1 for name in ("one", "two"))
        )
        assert await _eventually(lambda: len(_reports(report)) == 2)
        assert supervisor.zygote_pid not in (None, old_zygote)
        assert _reports(report)[1]["ppid"] == supervisor.zygote_pid
        assert await _eventually(lambda: supervisor.pid_of("one") not in (None, *old))
        new = supervisor.pid_of("one")
        assert new is not None and _alive(new)
    assert not _alive(new)


async def test_supervisor_stop_kills_a_forked_childs_group_and_the_zygote(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path / "logs", grace_period=0.5, zygote=_zygote(tmp_path))
    supervisor.start(_forked("stubborn", tmp_path, "stubborn"))
    report = tmp_path / "stubborn.jsonl"
    assert await _eventually(lambda: len(_reports(report)) == 1)
    (started,) = _reports(report)
    pids = [started["pid"], started["grandchild"], supervisor.zygote_pid]
    assert all(isinstance(pid, int) and _alive(pid) for pid in pids)

    await supervisor.stop()

    assert not any(isinstance(pid, int) and _alive(pid) for pid in pids)


def test_run_up_serves_until_interrupted_and_cleans_up(tmp_path: Path) -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="orchestrator-test-up-"))
    state_dir.chmod(0o755)  # PostgreSQL runs as the postgres user and must reach its data dir
    launcher = subprocess.Popen(
        _python_child(f"""
            import pathlib, sys
            from infra.stack.launcher import run_up
            sys.exit(run_up(pathlib.Path({str(state_dir)!r}), consumers=[]))
        """),
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **OPERATOR_VARIABLES},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait_until(
            lambda: read_stack_info(state_dir) is not None or launcher.poll() is not None,
            timeout=180,  # initdb alone takes 20 s on a loaded 2-core machine
        )
        info = read_stack_info(state_dir)
        assert info is not None
        assert (state_dir / "stack.json").stat().st_mode & 0o777 == 0o600
        assert f"ORCH_NATS__URL={info.nats_url}" in (state_dir / "env").read_text()
        _assert_children_hold_only_their_own_credentials(state_dir, info.vault_addr)

        operator = hvac.Client(url=info.vault_addr, token=info.vault_token)
        assert operator.auth.token.lookup_self()["data"]["policies"] == ["operator"]
        key = Path(info.deploy_target.client_key_path).read_text()
        operator.secrets.kv.v2.create_or_update_secret(
            path="servers/local", secret={"ssh_private_key": key}, mount_point="secret"
        )
        assert run_up(state_dir, consumers=[]) == 1

        launcher.send_signal(signal.SIGINT)
        stdout, _ = launcher.communicate(timeout=60)
        assert launcher.returncode == 0
        assert "a stack is already running" not in stdout
        assert "postgres" in stdout
        assert not (state_dir / "stack.json").exists()
        assert read_stack_info(state_dir) is None
        assert not _group_alive(launcher.pid)
    finally:
        launcher.kill()
        launcher.wait()
        shutil.rmtree(state_dir, ignore_errors=True)
