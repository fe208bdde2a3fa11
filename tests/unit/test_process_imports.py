"""Each process imports only the libraries its configuration uses (issue 12: memory and start-up).

Every consumer starts in its own process, so a library imported for nothing is paid for once per
process, in CPU at start and in resident memory all along: aiogram costs about 5 s of CPU and
120 MB, langchain_anthropic about 4 s. Each case imports a process's entry module in a fresh
interpreter, as the launcher does, and reads what it loaded; nothing here is timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: FastStream only generates the AsyncAPI catalogue; no running process needs it.
NEVER = {"faststream"}
#: Chosen by configuration: the provider's client with an LLM, aiogram with a Telegram token.
ON_DEMAND = {"aiogram", "langchain_anthropic", "langchain_openai", "openai", "anthropic"}
#: Only the indexer opens the memory store; the analyst and the engineer ask it over NATS.
INDEXER_ONLY = {"qdrant_client"}


def loaded_by(module: str) -> set[str]:
    script = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout))


@pytest.mark.parametrize(
    "module",
    [
        "consumers.analyst.app",
        "consumers.engineer.app",
        "consumers.notifier.app",
        "consumers.coordinator.app",
        "consumers.deployer.app",
    ],
)
def test_a_process_loads_no_library_its_configuration_does_not_use(module: str) -> None:
    loaded = loaded_by(module)
    unused = NEVER | ON_DEMAND | INDEXER_ONLY
    assert not loaded & unused, sorted(loaded & unused)
