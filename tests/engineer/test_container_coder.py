"""The container adapter against a real dockerd and the real coder image.

The image is built from infra/docker/coder.Dockerfile for real (`build_coder_image`, cached
per machine). The model is the scripted OpenAI-compatible server on the host; the container
reaches it only through the metering proxy's socket. What these tests hold the adapter to:
no network, no key or token in `docker inspect`, capabilities dropped, limits set, every test
run in a second container, the host never running model-written code, the project's
memory searched on the host, in the host's scope, for the agent's `search_memory`, and the
host deciding on its own measurements: its baseline taken before the coding container
starts, its test run after it, and the app started in a container of its own.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from consumers.engineer.app_probe import NOT_STARTED
from consumers.engineer.coder_image import build_coder_image
from consumers.engineer.container_coder import ContainerCoder, ContainerEngineError
from consumers.engineer.llm_proxy.ledger import MeteredCall
from consumers.engineer.llm_proxy.run import ProxyLauncher
from consumers.engineer.service import EngineerService
from consumers.engineer.workspace import GitWorkspaces
from contracts.events import CodeFailed, CodeGenerated
from infra.memory import MemoryStore
from infra.memory_search import LocalMemorySearch
from infra.settings import LLMSettings
from tests.engineer.conftest import (
    BROKEN_FILES,
    SERVICE_FILES,
    TEST_IMAGE,
    RepoFactory,
    code_requested,
    no_heartbeat,
)
from tests.engineer.docker_engine import DockerEngine
from tests.engineer.test_langgraph_coder import (
    CRASHING_MAIN,
    RIGHT_CALC,
    remote_head,
    tool_contents,
)
from tests.engineer.test_memory_tool import ALICE, BOB, EARLIER_COMMIT, code
from tests.fakes.openai_server import Reply, ScriptedOpenAI

PROVIDER_KEY = "sk-container-provider-key-123"
CODER_IMAGE = "orchestrator-test/coder:latest"


async def vault_key() -> str:
    return PROVIDER_KEY


@dataclass
class MemoryLedger:
    """The proxy's ledger kept in memory: refuses once `budget_calls` calls were recorded."""

    budget_calls: int = 100
    calls: list[MeteredCall] = field(default_factory=list)

    async def refusal(self) -> str | None:
        if len(self.calls) >= self.budget_calls:
            return "LLM budget of $0.01 for this project is spent"
        return None

    async def record(self, call: MeteredCall) -> None:
        self.calls.append(call)


@pytest.fixture(scope="package")
def coder_image(docker_engine: DockerEngine) -> str:
    """The real coder image, built once per run of tests/engineer against its dockerd."""
    seconds = build_coder_image(docker_engine.url, CODER_IMAGE)
    print(f"coder image built in {seconds:.1f} s")
    return CODER_IMAGE


@pytest.fixture
def provider() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI() as server:
        yield server


def container_coder(
    engine: DockerEngine,
    provider: ScriptedOpenAI,
    ledger: MemoryLedger,
    *,
    image: str,
    timeout: float = 240.0,
    **options: Any,
) -> ContainerCoder:
    settings = LLMSettings(provider="openai", base_url=provider.base_url, model="coder-model")
    return ContainerCoder(
        docker_client=engine.client,
        image=image,
        proxy=ProxyLauncher(settings, vault_key),
        ledger=lambda _task: ledger,
        settings=settings,
        timeout_seconds=timeout,
        test_timeout_seconds=120.0,
        heartbeat_seconds=0.2,
        **options,
    )


def offered_tools(provider: ScriptedOpenAI) -> set[str]:
    """The tools the agent offered the model on its first call."""
    return {tool["function"]["name"] for tool in provider.requests[0]["tools"]}


def containers_left(engine: DockerEngine) -> list[object]:
    return list(engine.client().containers.list(all=True))


class Inspector:
    """A heartbeat that records `docker inspect` of every container it sees running."""

    def __init__(self, engine: DockerEngine) -> None:
        self._engine = engine
        self.seen: dict[str, dict[str, Any]] = {}

    async def __call__(self) -> None:
        for container in self._engine.client().containers.list():
            self.seen.setdefault(container.id or "", container.attrs)

    def roles(self) -> set[str]:
        return {attrs["Config"]["Labels"]["orchestrator.role"] for attrs in self.seen.values()}


async def test_the_agent_fixes_the_code_in_a_hardened_container_and_tests_run_in_another(
    docker_engine: DockerEngine,
    coder_image: str,
    provider: ScriptedOpenAI,
    make_repo: RepoFactory,
) -> None:
    url, base = make_repo(BROKEN_FILES)
    provider.replies(
        Reply.tool_call(
            "write_file",
            {"path": "app/calc.py", "content": RIGHT_CALC},
            prompt_tokens=1200,
            completion_tokens=60,
        ),
        Reply.text("Implemented subtract", prompt_tokens=1300, completion_tokens=5),
    )
    ledger = MemoryLedger()
    inspector = Inspector(docker_engine)
    coder = container_coder(docker_engine, provider, ledger, image=coder_image)
    service = EngineerService(coder, GitWorkspaces(), max_iterations=3, heartbeat_seconds=60)

    started = time.monotonic()
    result = await service.handle(code_requested(url, base), inspector)
    print(f"container run took {time.monotonic() - started:.1f} s")

    event = result.event
    assert isinstance(event, CodeGenerated), event
    assert (event.mode, event.iterations, event.tests_passed, event.tests_failed) == (
        "container",
        1,
        4,
        0,
    )
    assert event.summary == "Implemented subtract"
    # No memory configured: the agent is not offered a tool that could only fail.
    assert "search_memory" not in offered_tools(provider)
    # Each call was metered by the proxy as it happened, not reported by the container.
    assert [(c.prompt_tokens, c.completion_tokens) for c in ledger.calls] == [(1200, 60), (1300, 5)]
    assert result.usage == ()
    assert {h["Authorization"] for h in provider.headers} == {f"Bearer {PROVIDER_KEY}"}
    # Coding container, test containers (the host's baseline, the agent's runs, the host's
    # final check) and the app check were seen.
    assert inspector.roles() == {"coder", "tests", "app"}
    assert_hardened(inspector)
    assert containers_left(docker_engine) == []


def assert_hardened(inspector: Inspector) -> None:
    """Every container seen ran without network, key, capabilities or root, within limits."""
    for attrs in inspector.seen.values():
        dumped = json.dumps(attrs)
        assert PROVIDER_KEY not in dumped
        assert "API_KEY" not in dumped
        host = attrs["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["ReadonlyRootfs"] is True
        assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (2 * 1024**3, 10**9, 256)
        assert attrs["Config"]["User"] == "65534:65534"


async def test_search_memory_in_the_container_answers_from_the_hosts_scope(
    docker_engine: DockerEngine,
    coder_image: str,
    provider: ScriptedOpenAI,
    make_repo: RepoFactory,
    memory_store: MemoryStore,
) -> None:
    url, base = make_repo(BROKEN_FILES)
    request = code_requested(url, base)
    # Text matching the query better lives in Alice's other project and in Bob's copy of this
    # very project id: the host's scope keeps both out of the container.
    memory_store.upsert(
        [
            code(ALICE, request.project_id, "app/calc.py", RIGHT_CALC),
            code(ALICE, uuid.uuid4(), "app/other.py", "# other-project subtract subtract"),
            code(BOB, request.project_id, "app/bob.py", "# bob-code subtract subtract subtract"),
        ]
    )
    provider.replies(
        Reply.tool_call("search_memory", {"query": "subtract"}),
        Reply.tool_call("write_file", {"path": "app/calc.py", "content": RIGHT_CALC}),
        Reply.text("Restored subtract(a, b) from the earlier revision"),
    )
    coder = container_coder(docker_engine, provider, MemoryLedger(), image=coder_image)
    service = EngineerService(
        coder, GitWorkspaces(), max_iterations=3, memory=LocalMemorySearch(memory_store)
    )

    result = await service.handle(request, no_heartbeat, owner=ALICE)

    assert isinstance(result.event, CodeGenerated), result.event
    assert "search_memory" in offered_tools(provider)
    found = tool_contents(provider.requests[1])[0]
    assert found.startswith(f"== app/calc.py:1-6 (commit {EARLIER_COMMIT[:12]})\n"), found
    assert "return a - b" in found
    assert "other-project" not in found and "bob-code" not in found
    assert containers_left(docker_engine) == []


#: How a run reads when the container's result says done and the host's checks do not.
HOST_DISAGREES = (
    "the coding container reported success after 1 iterations, but the engineer's own check "
    "disagrees: "
)
#: A coding container that lies: it writes a result claiming success, whatever it did.
CLAIMS_SUCCESS = (
    "import json, pathlib\n"
    "{action}\n"
    "pathlib.Path('/agent-io/result.json').write_text(json.dumps(\n"
    "    {{'iterations': 1, 'summary': 'Implemented subtract', 'reason': ''}}))\n"
)


@pytest.mark.parametrize(
    ("files", "action", "disagreement"),
    [
        pytest.param(SERVICE_FILES, "pass", "the model changed nothing", id="changes-nothing"),
        pytest.param(
            BROKEN_FILES,
            "pathlib.Path('/workspace/tests/test_calc.py').unlink()",
            "only 2 tests pass, fewer than the 4 tests the project had before this run",
            id="deletes-the-failing-test",
        ),
    ],
)
async def test_a_result_claiming_success_fails_when_the_hosts_measurements_disagree(
    docker_engine: DockerEngine,
    coder_image: str,
    provider: ScriptedOpenAI,
    make_repo: RepoFactory,
    tmp_path: Path,
    files: dict[str, str],
    action: str,
    disagreement: str,
) -> None:
    url, base = make_repo(files)
    lies, ledger = ("python", "-c", CLAIMS_SUCCESS.format(action=action)), MemoryLedger()
    coder = container_coder(docker_engine, provider, ledger, image=coder_image, command=lies)
    service = EngineerService(coder, GitWorkspaces(), max_iterations=3)

    result = await service.handle(code_requested(url, base), no_heartbeat)

    assert isinstance(result.event, CodeFailed), result.event
    assert result.event.reason.startswith(HOST_DISAGREES + disagreement), result.event.reason
    assert remote_head(url, tmp_path) == base
    assert containers_left(docker_engine) == []


async def test_an_app_that_does_not_start_fails_the_run_with_the_probe_s_output(
    docker_engine: DockerEngine,
    coder_image: str,
    provider: ScriptedOpenAI,
    make_repo: RepoFactory,
    tmp_path: Path,
) -> None:
    url, base = make_repo(BROKEN_FILES)
    # The tests never import the entry point: they go green, and the agent in the container
    # (which has no app check of its own) reports success.
    provider.replies(
        Reply.tool_call("write_file", {"path": "app/calc.py", "content": RIGHT_CALC}),
        Reply.tool_call("write_file", {"path": "app/__main__.py", "content": CRASHING_MAIN}),
        Reply.text("Implemented subtract"),
    )
    inspector = Inspector(docker_engine)
    coder = container_coder(docker_engine, provider, MemoryLedger(), image=coder_image)
    service = EngineerService(coder, GitWorkspaces(), max_iterations=3)

    result = await service.handle(code_requested(url, base), inspector)

    event = result.event
    assert isinstance(event, CodeFailed), event
    assert event.reason.startswith(HOST_DISAGREES + NOT_STARTED), event.reason
    assert "`python -m app` exited with status 1 before GET /health answered" in event.reason
    assert "ModuleNotFoundError: No module named 'app.server_settings'" in event.reason
    assert remote_head(url, tmp_path) == base
    assert_hardened(inspector)
    assert containers_left(docker_engine) == []


async def test_model_written_tests_have_no_network_and_never_run_on_the_host(
    docker_engine: DockerEngine,
    coder_image: str,
    provider: ScriptedOpenAI,
    make_repo: RepoFactory,
    tmp_path: Path,
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    marker = tmp_path / f"ran-on-host-{uuid.uuid4().hex}"
    escape_test = (
        "import socket\nfrom pathlib import Path\n\n\n"
        "def test_escape() -> None:\n"
        f"    Path({str(marker)!r}).write_text('model code ran here')\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=3).close()\n"
    )
    url, base = make_repo(BROKEN_FILES)
    provider.replies(
        Reply.tool_call("write_file", {"path": "app/calc.py", "content": RIGHT_CALC}),
        Reply.tool_call("write_file", {"path": "tests/test_escape.py", "content": escape_test}),
        Reply.text("Added an escape test"),
    )
    coder = container_coder(docker_engine, provider, MemoryLedger(), image=coder_image)
    service = EngineerService(coder, GitWorkspaces(), max_iterations=1)
    try:
        result = await service.handle(code_requested(url, base), no_heartbeat)
    finally:
        listener.close()

    assert isinstance(result.event, CodeFailed)
    reason = result.event.reason
    assert "test_escape" in reason
    # The marker path is the host's; inside the container it is not even writable.
    assert "Read-only file system" in reason or "No such file or directory" in reason
    assert not marker.exists()
    assert containers_left(docker_engine) == []


async def test_a_spent_budget_stops_the_agent_and_fails_the_run_with_the_reason(
    docker_engine: DockerEngine,
    coder_image: str,
    provider: ScriptedOpenAI,
    make_repo: RepoFactory,
) -> None:
    url, base = make_repo(BROKEN_FILES)
    provider.respond_with(lambda _body: Reply.tool_call("list_files", {}))
    ledger = MemoryLedger(budget_calls=2)
    coder = container_coder(docker_engine, provider, ledger, image=coder_image)
    service = EngineerService(coder, GitWorkspaces(), max_iterations=3)

    result = await service.handle(code_requested(url, base), no_heartbeat)

    assert isinstance(result.event, CodeFailed)
    assert result.event.reason == "LLM budget of $0.01 for this project is spent"
    assert len(provider.requests) == len(ledger.calls) == 2
    assert containers_left(docker_engine) == []


async def test_a_killed_run_keeps_the_calls_it_made(
    docker_engine: DockerEngine,
    coder_image: str,
    provider: ScriptedOpenAI,
    make_repo: RepoFactory,
) -> None:
    url, base = make_repo(BROKEN_FILES)

    def slow_second_call(_body: dict[str, Any]) -> Reply:
        time.sleep(3)  # the container is killed while this call is in flight
        return Reply.text("too late", prompt_tokens=11, completion_tokens=1)

    provider.replies(Reply.tool_call("list_files", {}, prompt_tokens=700, completion_tokens=7))
    provider.respond_with(slow_second_call)
    ledger = MemoryLedger()

    async def kill_during_the_second_call() -> None:
        if len(provider.requests) >= 2:
            for container in docker_engine.client().containers.list(
                filters={"label": "orchestrator.role=coder"}
            ):
                container.kill()

    coder = container_coder(docker_engine, provider, ledger, image=coder_image)
    service = EngineerService(coder, GitWorkspaces(), max_iterations=3)

    result = await service.handle(code_requested(url, base), kill_during_the_second_call)

    assert isinstance(result.event, CodeFailed)
    assert "the coding container exited with status 137 without a result" in result.event.reason
    # The first call's row was written when it returned; the call in flight is counted too
    # once the provider answers it (it was billed), never lost with the container.
    assert (ledger.calls[0].prompt_tokens, ledger.calls[0].completion_tokens) == (700, 7)
    assert containers_left(docker_engine) == []


async def test_a_crashed_agent_is_a_failure_quoting_its_logs(
    docker_engine: DockerEngine, provider: ScriptedOpenAI, make_repo: RepoFactory
) -> None:
    url, base = make_repo(BROKEN_FILES)
    coder = container_coder(
        docker_engine,
        provider,
        MemoryLedger(),
        image=TEST_IMAGE,
        command=("/bin/sh", "/agent.sh"),
        test_command=("/bin/true",),
        extra_env={"AGENT_EXIT": "3"},
    )
    service = EngineerService(coder, GitWorkspaces(), max_iterations=3)

    result = await service.handle(code_requested(url, base), no_heartbeat)

    assert isinstance(result.event, CodeFailed)
    assert "exited with status 3 without a result" in result.event.reason
    assert "agent: crashing" in result.event.reason
    assert containers_left(docker_engine) == []


async def test_a_missing_image_is_an_engine_error_not_a_code_failure(
    docker_engine: DockerEngine, provider: ScriptedOpenAI, make_repo: RepoFactory
) -> None:
    url, base = make_repo(BROKEN_FILES)
    coder = container_coder(
        docker_engine, provider, MemoryLedger(), image="orchestrator-test/absent:1"
    )
    service = EngineerService(coder, GitWorkspaces(), max_iterations=3)

    # The first container of a run is the host's baseline test run.
    with pytest.raises(ContainerEngineError, match="cannot create the tests container"):
        await service.handle(code_requested(url, base), no_heartbeat)
    assert containers_left(docker_engine) == []
