"""Builds the coding agent's image (infra/docker/coder.Dockerfile) against a Docker engine.

`make coder-image` (or `python -m consumers.engineer.coder_image --docker-url URL`) does it
in cached steps under `~/.cache/codegen-orchestrator`, so only the first build on a machine
is slow, and every build runs with no network:

1. the base: a debootstrap'ed Debian bookworm with python3, imported from a cached tarball
   (infra/docker/coder_base.sh; there is no registry to pull from);
2. the dependencies: a wheelhouse of `CODER_REQUIREMENTS` pinned by constraints.txt
   (downloaded with this interpreter's pip and its configured indexes), installed into a venv
   by coder-deps.Dockerfile; the image is saved as a tarball keyed by its recipe, so a fresh
   engine (each test session starts one) loads it instead of installing again;
3. the agent's code (`IMAGE_SOURCES`) on top: a few seconds.

Measured on the 2-core test machines (busy with other test runs): the base 92 s and the
wheelhouse plus dependency install about 6 min, each once per machine; loading the cached
dependencies and adding the code takes the rest of the builds, see docs/security.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TAG = "codegen-orchestrator/coder:latest"
BASE_TAG = "codegen-orchestrator/coder-base:bookworm"
DEPS_REPOSITORY = "codegen-orchestrator/coder-deps"
#: What the agent and a generated service's tests and start (`python -m app` runs uvicorn in
#: the host's app check) need inside the container. The container has no network, so a
#: generated project can only use what is installed here.
CODER_REQUIREMENTS = (
    "langchain-openai",
    "langchain-anthropic",
    "langgraph",
    "pydantic-settings",
    "httpx",
    "pytest",
    "fastapi",
    "uvicorn",
    "structlog",
)
_COMPLETE = ".complete-"
#: The repository paths the agent imports; nothing of the platform's secrets handling.
IMAGE_SOURCES = (
    "contracts",
    "consumers/__init__.py",
    "consumers/engineer",
    "infra/__init__.py",
    "infra/settings.py",
    "infra/llm.py",
    "infra/memory_types.py",
    "infra/memory_search.py",
    "infra/system_accounts.py",
)


def cache_dir() -> Path:
    configured = os.environ.get("CODER_BASE_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "codegen-orchestrator"


def ensure_base(docker_url: str, client: docker.DockerClient) -> None:
    """Import the debootstrap base into the engine unless it already has it."""
    try:
        client.images.get(BASE_TAG)
        return
    except docker.errors.ImageNotFound:
        pass
    subprocess.run(
        [str(ROOT / "infra/docker/coder_base.sh"), docker_url, BASE_TAG],
        check=True,
        env={**os.environ, "CODER_BASE_CACHE": str(cache_dir())},
    )


def ensure_wheelhouse() -> Path:
    """A directory of the pinned wheels, topped up when constraints or requirements change.

    Wheels of older pins stay (the install is constrained, so they are never picked); a
    changed pin downloads only itself.
    """
    constraints = (ROOT / "constraints.txt").read_bytes()
    wheelhouse = cache_dir() / "wheelhouse"
    wanted = hashlib.sha256(constraints + "\n".join(CODER_REQUIREMENTS).encode()).hexdigest()[:16]
    marker = wheelhouse / f"{_COMPLETE}{wanted}"
    if marker.exists():
        return wheelhouse
    wheelhouse.mkdir(parents=True, exist_ok=True)
    # pip keeps the wheels already in --dest.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--dest",
            str(wheelhouse),
            "-c",
            str(ROOT / "constraints.txt"),
            *CODER_REQUIREMENTS,
        ],
        check=True,
    )
    marker.touch()
    return wheelhouse


def ensure_deps(client: docker.DockerClient) -> str:
    """The dependencies image's tag: in the engine, loaded from the cache, or built and cached."""
    recipe = (
        b"".join(
            (ROOT / path).read_bytes()
            for path in ("infra/docker/coder-deps.Dockerfile", "constraints.txt")
        )
        + "\n".join(CODER_REQUIREMENTS).encode()
    )
    version = hashlib.sha256(recipe).hexdigest()[:16]
    tag = f"{DEPS_REPOSITORY}:{version}"
    tarball = cache_dir() / f"coder-deps-{version}.tar"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    if tarball.is_file():
        with tarball.open("rb") as data:
            client.images.load(data)
        return tag
    wheelhouse = ensure_wheelhouse()
    with tempfile.TemporaryDirectory(prefix="coder-deps-") as context_dir:
        context = Path(context_dir)
        shutil.copy(ROOT / "infra/docker/coder-deps.Dockerfile", context / "Dockerfile")
        shutil.copy(ROOT / "constraints.txt", context / "constraints.txt")
        (context / "coder-requirements.txt").write_text("\n".join(CODER_REQUIREMENTS) + "\n")
        shutil.copytree(wheelhouse, context / "wheelhouse", ignore=_ignored)
        client.images.build(
            path=str(context),
            tag=tag,
            rm=True,
            forcerm=True,
            network_mode="none",
            buildargs={"BASE": BASE_TAG},
        )
    partial = tarball.with_suffix(".partial")
    with partial.open("wb") as out:
        for chunk in client.images.get(tag).save(named=True):
            out.write(chunk)
    partial.rename(tarball)
    return tag


def build_coder_image(docker_url: str, tag: str = DEFAULT_TAG) -> float:
    """Build the coder image (dependencies from the cache when possible); returns seconds."""
    started = time.monotonic()
    client = docker.DockerClient(base_url=docker_url, timeout=900)
    try:
        ensure_base(docker_url, client)
        deps = ensure_deps(client)
        with tempfile.TemporaryDirectory(prefix="coder-image-") as context_dir:
            context = Path(context_dir)
            shutil.copy(ROOT / "infra/docker/coder.Dockerfile", context / "Dockerfile")
            for relative in IMAGE_SOURCES:
                source, target = ROOT / relative, context / "src" / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                if source.is_dir():
                    shutil.copytree(source, target, ignore=_ignored)
                else:
                    shutil.copy(source, target)
            client.images.build(
                path=str(context),
                tag=tag,
                rm=True,
                forcerm=True,
                network_mode="none",
                buildargs={"DEPS": deps},
            )
    finally:
        client.close()
    return time.monotonic() - started


def _ignored(_directory: str, names: list[str]) -> list[str]:
    return [
        name
        for name in names
        if name == "__pycache__" or name.startswith(_COMPLETE) or name.endswith(".pyc")
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the coding agent's container image.")
    parser.add_argument(
        "--docker-url",
        default=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
        help="Docker engine API URL",
    )
    parser.add_argument("--tag", default=DEFAULT_TAG, help="image tag to build")
    args = parser.parse_args(argv)
    seconds = build_coder_image(args.docker_url, args.tag)
    print(f"built {args.tag} in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
