"""A real Docker engine for tests: `dockerd` from Debian's docker.io, in a temp directory.

Found empirically on the test machines (Debian 12, 2 cores, root, no systemd, cgroup v1
hybrid hierarchy, no network but package mirrors), dockerd 20.10 runs with:

    dockerd --iptables=false --ip6tables=false --bridge=none
            --data-root <tmp>/data --exec-root <tmp>/exec --pidfile <tmp>/pid
            --host unix://<tmp>/docker.sock

- `--iptables=false --ip6tables=false --bridge=none`: no docker0 bridge or NAT rules, so the
  host's network is untouched; containers use `network_mode="none"`.
- The default overlay2 storage driver works on the ext4 root (no `--storage-driver=vfs`).
- dockerd starts its own containerd (socket under the exec root); nothing global is touched.
- cgroupfs driver, cgroup v1: no systemd or cgroup v2 delegation needed.
dockerd leaves its data root bind-mounted after it exits; `stop` unmounts whatever is still
mounted under the temp directory before deleting it.

The test image is not pulled (no registry here): `docker import` turns a rootfs of Debian's
`busybox-static` (`/bin/busybox` plus applet symlinks) and an agent script into an image.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import docker

BUSYBOX = Path("/bin/busybox")
_APPLETS = ("sh", "echo", "cat", "sleep", "grep", "mkdir", "ls", "env", "true")


class DockerEngine:
    """One dockerd listening on a unix socket in `base_dir`."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.socket = base_dir / "docker.sock"
        self.url = f"unix://{self.socket}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        if shutil.which("dockerd") is None:
            raise RuntimeError("dockerd is not installed: apt-get install docker.io busybox-static")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        log = (self.base_dir / "dockerd.log").open("wb")
        self._process = subprocess.Popen(
            [
                "dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                f"--data-root={self.base_dir / 'data'}", f"--exec-root={self.base_dir / 'exec'}",
                f"--pidfile={self.base_dir / 'dockerd.pid'}", f"--host={self.url}",
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"dockerd exited: {self.log_tail()}")
            try:
                self.client().ping()
                return
            except docker.errors.DockerException:
                time.sleep(0.2)
        raise RuntimeError(f"dockerd did not answer within {timeout} s: {self.log_tail()}")

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=60)

    def import_busybox_image(self, tag: str, agent_script: str) -> None:
        """Import a busybox rootfs with `/agent.sh` as the image `tag`."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as rootfs:
            rootfs.add(BUSYBOX, arcname="bin/busybox")
            for applet in _APPLETS:
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type = tarfile.SYMTYPE
                link.linkname = "busybox"
                rootfs.addfile(link)
            for directory in ("tmp", "workspace", "agent-io"):
                entry = tarfile.TarInfo(directory)
                entry.type = tarfile.DIRTYPE
                entry.mode = 0o1777
                rootfs.addfile(entry)
            script = agent_script.encode()
            entry = tarfile.TarInfo("agent.sh")
            entry.size = len(script)
            entry.mode = 0o755
            rootfs.addfile(entry, io.BytesIO(script))
        repository, _, version = tag.partition(":")
        self.client().api.import_image_from_data(
            buffer.getvalue(), repository=repository, tag=version or "latest"
        )

    def log_tail(self, chars: int = 3000) -> str:
        path = self.base_dir / "dockerd.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(5)
        mounts = [
            line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.base_dir))
        ]
        for mountpoint in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "--lazy", mountpoint], check=False)
        shutil.rmtree(self.base_dir, ignore_errors=True)
