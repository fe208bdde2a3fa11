"""`AnsibleRunner`: runs the playbooks of `infra/ansible/` with ansible-runner over pinned SSH.

The deployer runs its deploy playbooks through it, and `orchestrator servers bootstrap` the
playbook that prepares a server.

Every run gets its own private data dir (mode 0700, removed afterwards). Secrets reach Ansible
only through files in its `secrets/` subdirectory (mode 0600): the SSH key, referenced by path
from the inventory, and a JSON file the playbook loads with `no_log`. Nothing secret goes into
extravars, environment variables or argv, because ansible-runner copies all three into
`artifacts/<id>/command` and ssh/ansible-playbook show argv to every user of the machine.

ansible-runner seeds the playbook's environment with this process's whole environment (which
holds the deployer's own Vault credentials) and records it in `artifacts/<id>/command`, so the
inherited environment is cut down to an allowlist before the run starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible_runner.config.runner import RunnerConfig
from ansible_runner.runner import Runner

PLAYBOOK_DIR = Path(__file__).resolve().parent / "ansible"

#: Inherited variables the playbook may see; everything else of this process stays out.
INHERITED_ALLOWLIST = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"}
)


@dataclass(frozen=True)
class ServerTarget:
    """How to reach one inventory server over SSH; the host key is pinned, never learned."""

    name: str
    host: str
    ssh_port: int
    ssh_user: str
    host_key: str


@dataclass(frozen=True)
class PlaybookRun:
    """One playbook run against one server.

    `extravars` are plain configuration and may be written anywhere; `secrets` and the private
    key are handed over only through files the runner owns for the length of the run.
    """

    playbook: str
    target: ServerTarget
    extravars: Mapping[str, Any]
    private_key: str = field(repr=False)
    secrets: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True)
class PlaybookResult:
    """What a run ended with.

    `stats` holds what the playbook reported with `set_stats` (the deploy outcome); `failure`
    is the message of the last failed task and `unreachable` the SSH error, each empty if none.
    """

    status: str
    stats: Mapping[str, Any]
    failure: str = ""
    unreachable: str = ""
    duration_seconds: float = 0.0
    #: Tasks that reported a change, over all hosts (0 on a run that was already converged).
    changed: int = 0


def _write_private(path: Path, content: str) -> None:
    """Create `path` with mode 0600 before any byte is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)


def write_private_key(path: Path, private_key: str) -> None:
    """An SSH private key file, 0600 from its creation (OpenSSH wants the final newline)."""
    _write_private(path, private_key.rstrip("\n") + "\n")


class AnsibleRunner:
    """Runs one playbook from `infra/ansible/` against one server, in a worker thread."""

    def __init__(
        self,
        playbook_dir: Path = PLAYBOOK_DIR,
        *,
        timeout_seconds: int = 900,
        work_dir: Path | None = None,
        before_cleanup: Callable[[Path, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        """`before_cleanup` sees the private data dir and the events just before removal.

        It exists for audits (the tests prove no secret leaks into artifacts or events).
        """
        self._playbook_dir = playbook_dir
        self._timeout = timeout_seconds
        self._work_dir = work_dir
        self._before_cleanup = before_cleanup

    async def run(self, run: PlaybookRun) -> PlaybookResult:
        return await asyncio.to_thread(self._run, run)

    def _run(self, run: PlaybookRun) -> PlaybookResult:
        # mkdtemp creates the directory with mode 0700.
        private_dir = Path(tempfile.mkdtemp(prefix="deploy-", dir=self._work_dir))
        events: list[dict[str, Any]] = []
        try:
            config = self._prepare(private_dir, run)
            started = time.monotonic()
            runner = Runner(config=config, event_handler=self._collector(events))
            status, _rc = runner.run()
            return _result(status, events, time.monotonic() - started)
        finally:
            if self._before_cleanup is not None:
                self._before_cleanup(private_dir, events)
            shutil.rmtree(private_dir, ignore_errors=True)

    @staticmethod
    def _collector(events: list[dict[str, Any]]) -> Callable[[dict[str, Any]], bool]:
        def collect(event: dict[str, Any]) -> bool:
            events.append(event)
            return True  # keep writing the event file (artifacts stay complete for audits)

        return collect

    def _prepare(self, private_dir: Path, run: PlaybookRun) -> RunnerConfig:
        secrets_dir = private_dir / "secrets"
        secrets_dir.mkdir(mode=0o700)
        key_path = secrets_dir / "ssh_key"
        write_private_key(key_path, run.private_key)
        secrets_path = secrets_dir / "vars.json"
        _write_private(secrets_path, json.dumps(dict(run.secrets)))

        known_hosts = private_dir / "known_hosts"
        known_hosts.write_text(run.target.host_key.strip() + "\n")
        target = run.target
        inventory = {
            "all": {
                "hosts": {
                    "target": {
                        "ansible_host": target.host,
                        "ansible_port": target.ssh_port,
                        "ansible_user": target.ssh_user,
                        "ansible_ssh_private_key_file": str(key_path),
                        # The host key is pinned: only the inventory's line is trusted.
                        "ansible_ssh_common_args": (
                            f"-o UserKnownHostsFile={known_hosts} "
                            "-o GlobalKnownHostsFile=/dev/null "
                            "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
                        ),
                        "ansible_python_interpreter": "/usr/bin/python3",
                    }
                }
            }
        }
        inventory_dir = private_dir / "inventory"
        inventory_dir.mkdir()
        # Ansible's YAML inventory plugin reads JSON (a subset of YAML) from a .json file.
        (inventory_dir / "hosts.json").write_text(json.dumps(inventory))
        env_dir = private_dir / "env"
        env_dir.mkdir()
        extravars = {**run.extravars, "secrets_file": str(secrets_path)}
        (env_dir / "extravars").write_text(json.dumps(extravars))
        for sub in ("tmp", "cp"):
            (private_dir / sub).mkdir(mode=0o700)

        own_env = self._environment(private_dir)
        config = RunnerConfig(
            private_data_dir=str(private_dir),
            project_dir=str(self._playbook_dir),
            playbook=run.playbook,
            inventory=str(inventory_dir / "hosts.json"),
            envvars=own_env,
            ident="run",
            quiet=True,
            timeout=self._timeout,
            suppress_env_files=True,
        )
        config.prepare()
        config.env = _without_inherited(config.env, own_env)
        return config

    def _environment(self, private_dir: Path) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        return {
            # ansible-runner finds ansible-playbook on PATH: put this venv's bin/ first.
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_LOCAL_TEMP": str(private_dir / "tmp"),
            # A control master of another run (maybe with another pinned key) is never reused.
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(private_dir / "cp"),
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=10s",
            "ANSIBLE_TIMEOUT": "20",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_DISPLAY_ARGS_TO_STDOUT": "False",
            "ANSIBLE_NOCOLOR": "True",
            "ANSIBLE_ROLES_PATH": str(self._playbook_dir / "roles"),
        }


def _without_inherited(env: Mapping[str, str], own: Mapping[str, str]) -> dict[str, str]:
    """Keep what ansible-runner and we set; drop what was only inherited, unless allowlisted."""
    inherited = os.environ
    return {
        key: value
        for key, value in env.items()
        if key in own or key in INHERITED_ALLOWLIST or inherited.get(key) != value
    }


def _result(status: str, events: list[dict[str, Any]], duration: float) -> PlaybookResult:
    stats: dict[str, Any] = {}
    changed = 0
    failure = ""
    unreachable = ""
    for event in events:
        data = event.get("event_data") or {}
        kind = event.get("event")
        if kind == "playbook_on_stats":
            stats = dict(data.get("artifact_data") or {})
            changed = sum(int(n) for n in (data.get("changed") or {}).values())
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            res = data.get("res") or {}
            failure = f"{data.get('task', 'a task')}: {res.get('msg', 'failed')}"
        elif kind == "runner_on_unreachable":
            unreachable = str((data.get("res") or {}).get("msg", "unreachable"))
    return PlaybookResult(
        status=status,
        stats=stats,
        failure=failure,
        unreachable=unreachable,
        duration_seconds=duration,
        changed=changed,
    )
