"""Picks the sandbox adapter and its limits from the engineer's settings."""

from __future__ import annotations

from pathlib import Path

from consumers.engineer.sandbox.bubblewrap import BubblewrapSandbox
from consumers.engineer.sandbox.port import Sandbox, SandboxLimits
from consumers.engineer.sandbox.unsandboxed import Unsandboxed
from consumers.engineer.settings import EngineerSettings

_MB = 1024**2


def build_sandbox(settings: EngineerSettings) -> Sandbox:
    if settings.sandbox == "none":
        return Unsandboxed()
    return BubblewrapSandbox(user=settings.sandbox_user)


def limits_from(settings: EngineerSettings) -> SandboxLimits:
    """Limits of a test run; an install uses the same with its own wall clock."""
    return SandboxLimits(
        cpu_seconds=settings.sandbox_cpu_seconds,
        memory_bytes=settings.sandbox_memory_mb * _MB,
        processes=settings.sandbox_processes,
        open_files=settings.sandbox_open_files,
        file_size_bytes=settings.sandbox_file_size_mb * _MB,
        output_bytes=settings.sandbox_output_kb * 1024,
        wall_seconds=settings.test_timeout_seconds,
    )


def cache_dir_from(settings: EngineerSettings) -> Path:
    if settings.sandbox_cache_dir is not None:
        return settings.sandbox_cache_dir
    return Path.home() / ".cache" / "codegen-orchestrator" / "sandbox"
