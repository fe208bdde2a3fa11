"""The engineer's sandbox inside a container, with the security options compose gives it.

In docker compose (and Helm) the engineer is itself a container, and bubblewrap must build the
sandbox of model-written code inside it: an unprivileged user namespace, new PID and network
namespaces and a fresh `/proc`. Docker's defaults forbid two of those (its seccomp profile
refuses `unshare(CLONE_NEWUSER)`, and its masked `/proc` paths make a new procfs mount "too
revealing"), so the engineer service carries a seccomp filter of its own
(`infra/docker/engineer-seccomp.json`, which allows namespaces and refuses a list of kernel
interfaces) and `systempaths=unconfined`.
This runs bubblewrap, with the namespaces and mounts `consumers/engineer/sandbox/bubblewrap.py`
uses, as the app image's unprivileged user (uid 10001) in a real Docker engine: with the
engineer's options it isolates the code (its own PIDs only, no network); with the defaults, or
the options every other service has, it cannot start at all.

The image is the coder's debootstrap base (no registry here) with the host's `bwrap`, the
binary of the Debian package the app image installs.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from consumers.engineer.coder_image import BASE_TAG, ensure_base
from tests.engineer.docker_engine import DockerEngine

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "codegen-orchestrator/bwrap-probe:test"
APP_UID = "10001:10001"  # the app image's `orchestrator` user
#: What the sandboxed code reports: its uid, the PIDs it sees, whether it reached the network.
PROBE = """
import ctypes, json, os, platform, socket
try:
    socket.create_connection(("192.0.2.1", 80), timeout=1)
    network = "reached"
except OSError as error:
    network = type(error).__name__
pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
# perf_event_open(NULL, ...): EFAULT where the call is allowed (the NULL attr is read first),
# EPERM where a seccomp filter refuses it.
libc = ctypes.CDLL(None, use_errno=True)
number = {"x86_64": 298, "aarch64": 241}[platform.machine()]
libc.syscall(number, None, 0, -1, -1, 0)
perf = os.strerror(ctypes.get_errno())
print(json.dumps({"uid": os.getuid(), "pids": pids, "network": network, "perf_event_open": perf}))
"""
BWRAP = [
    "bwrap", "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
    "--unshare-cgroup-try", "--unshare-net", "--die-with-parent", "--new-session",
    "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64",
    "/lib64", "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev",
    "--tmpfs", "/tmp", "--clearenv", "--", "/usr/bin/python3", "-c", PROBE,
]  # fmt: skip


def compose_security_opt(service: str) -> list[str]:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return list(services[service].get("security_opt", []))


@pytest.fixture(scope="module")
def client(docker_engine: DockerEngine) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_engine.url, timeout=300)
    ensure_base(docker_engine.url, client)
    context = io.BytesIO()
    dockerfile = f"FROM {BASE_TAG}\nCOPY bwrap /usr/bin/bwrap\n".encode()
    with tarfile.open(fileobj=context, mode="w") as tar:
        tar.add("/usr/bin/bwrap", arcname="bwrap")
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=IMAGE, network_mode="none")
    yield client
    client.close()


def run_as_compose_would(client: docker.DockerClient, security_opt: list[str]) -> tuple[int, str]:
    """Run the sandbox as the app user with `security_opt` applied the way docker compose
    applies it (`systempaths=unconfined` is a client-side option: no masked or read-only
    `/proc` paths); returns the exit status and the output."""
    unmasked = "systempaths=unconfined" in security_opt
    daemon_opts = [_profile_loaded(opt) for opt in security_opt if opt != "systempaths=unconfined"]
    host_config: dict[str, Any] = client.api.create_host_config(
        network_mode="none", security_opt=daemon_opts or None
    )
    if unmasked:
        host_config["MaskedPaths"] = []
        host_config["ReadonlyPaths"] = []
    container = client.api.create_container(IMAGE, BWRAP, user=APP_UID, host_config=host_config)
    try:
        client.api.start(container)
        status = client.api.wait(container, timeout=120)["StatusCode"]
        return status, client.api.logs(container).decode()
    finally:
        client.api.remove_container(container, force=True)


def _profile_loaded(option: str) -> str:
    """`seccomp=<file>` as docker compose sends it: the file's JSON, read on the client side,
    relative to the compose file."""
    key, _, value = option.partition("=")
    if key != "seccomp" or value == "unconfined":
        return option
    return f"seccomp={(ROOT / value).read_text()}"


def test_the_engineers_options_let_bubblewrap_isolate_code_in_its_container(
    client: docker.DockerClient,
) -> None:
    options = compose_security_opt("engineer")
    status, output = run_as_compose_would(client, options)
    assert status == 0, output
    seen = json.loads(output.strip().splitlines()[-1])
    assert seen["uid"] == 10001  # never root: the app user, mapped into its own namespace
    # A fresh /proc: bubblewrap's init (PID 1) and the code itself, nothing of the container.
    assert seen["pids"] == [1, 2], seen
    assert seen["network"] != "reached"
    # The engineer's own seccomp filter still holds in there.
    assert seen["perf_event_open"] == os.strerror(errno.EPERM), seen


def test_the_engineers_seccomp_filter_is_what_refuses_the_kernel_interfaces_it_lists(
    client: docker.DockerClient,
) -> None:
    """The control: the same probe with the filter swapped for none reaches the kernel."""
    options = compose_security_opt("engineer")
    assert any(opt.startswith("seccomp=") and opt != "seccomp=unconfined" for opt in options)
    unfiltered = [opt for opt in options if not opt.startswith("seccomp=")]
    status, output = run_as_compose_would(client, [*unfiltered, "seccomp=unconfined"])
    assert status == 0, output
    seen = json.loads(output.strip().splitlines()[-1])
    assert seen["perf_event_open"] == os.strerror(errno.EFAULT), seen


def test_without_them_bubblewrap_cannot_start_so_the_options_are_needed(
    client: docker.DockerClient,
) -> None:
    for options in ([], compose_security_opt("deployer")):
        status, output = run_as_compose_would(client, options)
        assert status != 0, (options, output)
        assert "bwrap:" in output, output
