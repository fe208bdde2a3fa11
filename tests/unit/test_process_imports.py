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


#: LangChain and LangGraph: the analyst's graph needs them, an engineer only for an LLM run.
LANGCHAIN_STACK = {"langgraph", "langchain_core", "langsmith"}


@pytest.mark.parametrize(
    ("module", "also_unused"),
    [
        ("consumers.analyst.app", set()),
        ("consumers.engineer.app", LANGCHAIN_STACK),
        ("consumers.notifier.app", LANGCHAIN_STACK),
        ("consumers.coordinator.app", LANGCHAIN_STACK),
        ("consumers.deployer.app", LANGCHAIN_STACK),
    ],
)
def test_a_process_loads_no_library_its_configuration_does_not_use(
    module: str, also_unused: set[str]
) -> None:
    loaded = loaded_by(module)
    unused = NEVER | ON_DEMAND | INDEXER_ONLY | also_unused
    assert not loaded & unused, sorted(loaded & unused)
