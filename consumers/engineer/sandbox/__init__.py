"""Where model-written code runs: the sandbox port and its adapters (see `port.py`)."""

from consumers.engineer.sandbox.factory import build_sandbox, cache_dir_from, limits_from
from consumers.engineer.sandbox.port import (
    Mount,
    Sandbox,
    SandboxLimits,
    SandboxResult,
    SandboxUnavailable,
)

__all__ = [
    "Mount",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "build_sandbox",
    "cache_dir_from",
    "limits_from",
]
