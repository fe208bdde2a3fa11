"""Compose mode over real SSH, with a fake `docker` on the server (there is no Docker engine here).

The fake records its argv and standard input, which proves the registry token reaches
`docker login` on stdin and never on a command line; a stdlib HTTP server stands in for the
started container so the playbook's health check runs for real.
"""

from __future__ import annotations

import json
import secrets
import shutil
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contracts.events import DeployMode, DeployRequested, DeploySucceeded
from contracts.spec import ConfigVar, ProjectSpec, ServiceKind
from infra.playbook_runner import AnsibleRunner
from infra.repo_urls import ForgeSettings
from infra.stack.deploy_account import prepare_deploy_root
from infra.stack.git_daemon import GitDaemon
from infra.stack.openbao_server import BootstrappedOpenBao
from infra.stack.ports import free_port
from infra.vault import VaultClient

from .conftest import (
    SERVER_NAME,
    Deployer,
    SecretAudit,
    ServiceRepo,
    VaultSetup,
    env_file_mode,
    remove_projects,
    shared_dir,
)

REGISTRY = "registry.example.test"

FAKE_DOCKER = """#!/usr/bin/python3
import json, os, pwd, sys
with open({calls!r}, "a") as calls:
    calls.write(json.dumps({{"argv": sys.argv[1:], "stdin": sys.stdin.read(),
                            "user": pwd.getpwuid(os.getuid()).pw_name}}) + "\\n")
"""


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads results, not access logs."""


@pytest.fixture
def container_port() -> Iterator[int]:
    """What `docker compose up` would have started: something answering /health."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def compose_dir() -> Iterator[Path]:
    """A traversable dir for the fake docker and the deploy root; its project is removed after."""
    shared = shared_dir("orch-test-compose-")
    yield shared
    if (shared / "srv").is_dir():
        remove_projects(shared / "srv")
    shutil.rmtree(shared, ignore_errors=True)


async def test_registry_token_goes_through_stdin_only(
    deploy_sessions: async_sessionmaker[AsyncSession],
    vault_setup: VaultSetup,
    service_repo: ServiceRepo,
    openbao: BootstrappedOpenBao,
    container_port: int,
    compose_dir: Path,
    git_daemon: GitDaemon,
) -> None:
    token = "reg-" + secrets.token_urlsafe(24)
    operator = VaultClient(openbao.addr, token=openbao.root_token)
    await operator.write_secret(
        "platform/registry", {"registry": REGISTRY, "username": "deployer", "token": token}
    )
    # The docker CLI runs as the project's user: the fake and its log must be reachable by it.
    shared = compose_dir
    calls = shared / "docker-calls.jsonl"
    calls.touch(mode=0o666)
    calls.chmod(0o666)
    docker = shared / "docker"
    docker.write_text(FAKE_DOCKER.format(calls=str(calls)))
    docker.chmod(0o755)
    audit = SecretAudit([token, *vault_setup.secret_values])
    audit.start_argv_sampling()
    deploy_root = prepare_deploy_root(shared / "srv")
    deployer = Deployer(
        deploy_sessions,
        AnsibleRunner(timeout_seconds=300, before_cleanup=audit.before_cleanup),
        vault_setup,
        deploy_root,
        docker_command=str(docker),
        forge=ForgeSettings(daemon_url=git_daemon.base_url),
    )
    spec = ProjectSpec(
        name="Compose app",
        slug="compose-app",
        summary="Runs in containers.",
        kinds=(ServiceKind.HTTP,),
        config=(ConfigVar(name="API_TOKEN", secret=True),),
    )

    try:
        events, seconds = await deployer.deploy(
            DeployRequested(
                correlation_id=uuid.uuid4(),
                actor="coordinator",
                project_id=vault_setup.project_id,
                spec=spec,
                clone_url=service_repo.clone_url,
                commit=service_repo.good,
                server_name=SERVER_NAME,
                host="127.0.0.1",
                port=container_port,
                mode=DeployMode.COMPOSE,
            )
        )
    finally:
        audit.stop_argv_sampling()
    print(f"compose deploy took {seconds:.1f}s")

    assert [type(e) for e in events] == [DeploySucceeded], events
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    assert recorded[0] == {
        "argv": ["login", "--username", "deployer", "--password-stdin", REGISTRY],
        "stdin": token,
        "user": "orch-p-compose-app",
    }
    assert recorded[1]["argv"][:2] == ["compose", "--project-name"]
    assert recorded[1]["argv"][-3:] == ["up", "-d", "--remove-orphans"]
    assert all(token not in " ".join(call["argv"]) for call in recorded)
    release = deploy_root / "compose-app" / "releases" / service_repo.good[:12]
    assert env_file_mode(release / ".env") == 0o600
    assert (release / ".env").owner() == "orch-p-compose-app"
    assert audit.runs == 1
    assert audit.leaks == []
