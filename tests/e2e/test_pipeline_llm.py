"""End to end with an LLM: `orchestrator up` against a scripted OpenAI-compatible provider.

The stack runs as a user starts it (`ORCH_LLM__PROVIDER=openai`, a base URL, a model, prices,
the in-process coding agent); the provider key is stored in Vault with the operator token, as
an operator does. Only the model's answers are scripted, by looking at each request as a
provider would see it: the analyst (offered `ProjectSpec`) writes an HTTP spec whose
acceptance criteria need an endpoint the scaffold lacks; the coder reads the API, writes a
test and a wrong implementation, sees the test fail, and fixes the code in its second
iteration. Everything after that (commit, deploy, health, usage ledger, notifications) is the
real pipeline.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import threading
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import hvac
import psycopg

from contracts.events import CodeGenerated
from contracts.topology import PROJECT
from infra.console_chat_file import ConsoleChatLine, console_chat_path
from infra.stack.stack_info import STACK_FILE, StackInfo
from tests.fakes.openai_server import Reply, ScriptedOpenAI, ToolCall

from .conftest import LocalStackProcess, admin_nats, new_state_dir
from .test_pipeline_offline import own_port_range

PROMPT_PRICE, COMPLETION_PRICE = Decimal("0.5"), Decimal("1.5")
ANALYST_TOKENS = (1200, 300)
#: (prompt, completion) tokens of the coder's five turns: read, write, done, fix, done.
CODER_TOKENS = ((2000, 40), (2600, 400), (3100, 10), (3500, 250), (3900, 12))
SUMMARY = "Added GET /expenses/total, the sum of all expense amounts"

SPEC: dict[str, Any] = {
    "name": "Expense tracker",
    "slug": "expense-tracker",
    "summary": "Records expenses and tells their total.",
    "kinds": ["http"],
    "language": "en",
    "entities": [
        {
            "name": "Expense",
            "fields": [
                {"name": "amount", "type": "float", "description": "How much was spent"},
                {"name": "category", "type": "str", "description": "What it was for"},
            ],
        }
    ],
    "endpoints": [
        {"method": "GET", "path": "/health", "summary": "Liveness"},
        {"method": "POST", "path": "/expenses", "summary": "Record an expense"},
        {"method": "GET", "path": "/expenses", "summary": "List expenses"},
        {"method": "GET", "path": "/expenses/total", "summary": "Sum of all amounts"},
    ],
    "config": [],
    "acceptance_criteria": [
        "POST /expenses with an amount and a category stores the expense",
        'GET /expenses/total answers {"total": <sum of all stored amounts>}',
    ],
}

TOTAL_TEST = """\
from fastapi.testclient import TestClient


def test_total_is_the_sum_of_all_amounts(client: TestClient) -> None:
    for amount in (12.5, 7.5):
        created = client.post("/expenses", json={"amount": amount, "category": "food"})
        assert created.status_code == 201, created.text
    assert client.get("/expenses/total").json() == {"total": 20.0}
"""

#: Before the item routes, so `/expenses/{item_id}` does not swallow `/expenses/total`.
ROUTER_LINE = "    router = APIRouter()\n"
WRONG_TOTAL = """
    @router.get("/expenses/total")
    async def expenses_total() -> dict[str, float]:
        return {"total": float(len(stores.expenses.list()))}
"""
RIGHT_TOTAL = """
    @router.get("/expenses/total")
    async def expenses_total() -> dict[str, float]:
        return {"total": sum(item.amount for item in stores.expenses.list())}
"""
RETRY_MARKER = "Iteration 1: the work is not done yet"


def _tokens(turn: int) -> dict[str, int]:
    prompt, completion = CODER_TOKENS[turn]
    return {"prompt_tokens": prompt, "completion_tokens": completion}


def _with_total(api_source: str, route: str) -> str:
    assert ROUTER_LINE in api_source, api_source
    return api_source.replace(ROUTER_LINE, ROUTER_LINE + route, 1)


def _coder(body: dict[str, Any]) -> Reply:
    """The coding model: read the API, add a test and a wrong total, then fix it."""
    messages: list[dict[str, Any]] = body["messages"]
    tool_results = [str(m.get("content")) for m in messages if m["role"] == "tool"]
    api_source = next((text for text in tool_results if "def build_router" in text), None)
    fixing = any(m["role"] == "user" and RETRY_MARKER in str(m["content"]) for m in messages)
    last = messages[-1]
    if api_source is None:
        return Reply.tool_call("read_file", {"path": "app/api.py"}, **_tokens(0))
    if not fixing:
        if last["role"] == "tool" and "def build_router" in str(last["content"]):
            return Reply.calls(
                ToolCall("write_file", {"path": "tests/test_total.py", "content": TOTAL_TEST}),
                ToolCall(
                    "write_file",
                    {"path": "app/api.py", "content": _with_total(api_source, WRONG_TOTAL)},
                ),
                **_tokens(1),
            )
        return Reply.text("Added GET /expenses/total", **_tokens(2))
    if last["role"] == "user":
        fixed = _with_total(api_source, RIGHT_TOTAL)
        return Reply.tool_call("write_file", {"path": "app/api.py", "content": fixed}, **_tokens(3))
    return Reply.text(SUMMARY, **_tokens(4))


def scripted_provider(body: dict[str, Any]) -> Reply:
    """Answers as the model would, told apart by the tools each agent offers."""
    offered = {tool["function"]["name"] for tool in body.get("tools", [])}
    if "ProjectSpec" in offered:
        prompt, completion = ANALYST_TOKENS
        return Reply.tool_call(
            "ProjectSpec", SPEC, prompt_tokens=prompt, completion_tokens=completion
        )
    if "write_file" in offered:
        return _coder(body)
    return Reply.error(400, f"unexpected request offering tools {sorted(offered)}")


def store_key_when_vault_is_up(state_dir: Path, api_key: str, done: threading.Event) -> None:
    """The operator's step: put the provider key in Vault as soon as the stack publishes it.

    `stack.json` (Vault address and operator token) is written just before the consumers are
    spawned; they read the key at startup, and one that starts before the key is there exits
    and is restarted by the supervisor.
    """
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            info = json.loads((state_dir / STACK_FILE).read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.05)
            continue
        client = hvac.Client(url=info["vault_addr"], token=info["vault_token"])
        client.secrets.kv.v2.create_or_update_secret(
            path="platform/llm", secret={"api_key": api_key}, mount_point="secret"
        )
        done.set()
        return


def code_generated_event(info: StackInfo) -> CodeGenerated:
    async def read() -> CodeGenerated:
        client = await admin_nats(info)
        try:
            message = await client.jsm().get_last_msg(PROJECT.name, CodeGenerated.TYPE)
            assert message.data is not None
            return CodeGenerated.model_validate_json(message.data)
        finally:
            await client.close()

    return asyncio.run(read())


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_a_project_is_specified_coded_in_two_iterations_and_deployed_with_an_llm() -> None:
    api_key = f"sk-e2e-{secrets.token_hex(16)}"
    with ScriptedOpenAI(scripted_provider) as provider:
        stack = LocalStackProcess(
            new_state_dir("llm"),
            env={
                "ORCH_LLM__PROVIDER": "openai",
                "ORCH_LLM__BASE_URL": provider.base_url,
                "ORCH_LLM__MODEL": "scripted-model",
                "ORCH_LLM__PROMPT_COST_PER_1K": str(PROMPT_PRICE),
                "ORCH_LLM__COMPLETION_COST_PER_1K": str(COMPLETION_PRICE),
                "ORCH_LLM__MAX_CODER_ITERATIONS": "4",
                # The scripted prices make this run cost about $12: above the $2 default.
                "ORCH_QUOTAS__LLM_USD_PER_PROJECT": "50",
                "ORCH_QUOTAS__LLM_USD_PER_USER_MONTH": "500",
                "ORCH_ENGINEER_MODE": "inprocess",
            },
        )
        key_stored = threading.Event()
        operator = threading.Thread(
            target=store_key_when_vault_is_up, args=(stack.state_dir, api_key, key_stored)
        )
        operator.start()
        try:
            info = stack.start()
            own_port_range(stack)
            operator.join(10)
            assert key_stored.is_set(), "the provider key could not be stored in Vault"

            requested_at = time.monotonic()
            requested = stack.cli(
                "request", "an HTTP service that records my expenses and tells their total"
            )
            assert requested.returncode == 0, requested.stderr
            project_id = requested.stdout.split("project ", 1)[1].split()[0]
            status = stack.wait_for_state(project_id, {"active", "failed"}, timeout=420)
            assert status["state"] == "active", (status, _logs(stack))
            elapsed = time.monotonic() - requested_at
            assert status["offline"] is False
            assert status["slug"] == "expense-tracker"

            db_url = info.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
            with psycopg.connect(db_url) as db:
                repo_commit, code_commit, clone_url = db.execute(
                    "select repo_commit, code_commit, repo_clone_url from projects where id = %s",
                    (project_id,),
                ).fetchone() or (None, None, None)
                usage = db.execute(
                    "select stage, model, prompt_tokens, completion_tokens, cost_usd"
                    " from llm_usage where project_id = %s order by id",
                    (project_id,),
                ).fetchall()

            # The URL answers with this project's service at the engineer's commit.
            assert repo_commit and code_commit and clone_url and code_commit != repo_commit
            url = str(status["url"])
            health = _get_json(f"{url}/health")
            assert (health["status"], health["version"]) == ("ok", code_commit), health
            assert _get_json(f"{url}/expenses/total") == {"total": 0}

            # The code commit is the model's change, directly on top of the scaffold.
            checkout = stack.state_dir / "check"
            git("clone", "--quiet", clone_url, str(checkout), cwd=stack.state_dir)
            assert git("rev-parse", "HEAD", cwd=checkout) == code_commit
            assert git("rev-parse", "HEAD^", cwd=checkout) == repo_commit
            assert git("log", "-1", "--format=%s", cwd=checkout) == f"engineer: {SUMMARY}"
            trailers = git("log", "-1", "--format=%b", cwd=checkout)
            assert "Engineer-Mode: llm" in trailers and "Engineer-Iterations: 2" in trailers
            assert (checkout / "tests" / "test_total.py").read_text() == TOTAL_TEST
            assert "sum(item.amount" in (checkout / "app" / "api.py").read_text()
            changed = git("diff", "--name-only", "HEAD^", "HEAD", cwd=checkout).split()
            assert sorted(changed) == ["app/api.py", "tests/test_total.py"]

            event = code_generated_event(info)
            assert str(event.project_id) == project_id
            assert (event.mode, event.iterations, event.commit) == ("llm", 2, code_commit)
            assert event.tests_failed == 0 and event.tests_passed > 1

            # The coder saw its own test fail before fixing it.
            coder_requests = [
                r
                for r in provider.requests
                if "write_file" in {t["function"]["name"] for t in r.get("tools", [])}
            ]
            assert len(coder_requests) == len(CODER_TOKENS)
            retry = next(
                str(m["content"])
                for m in coder_requests[3]["messages"]
                if m["role"] == "user" and RETRY_MARKER in str(m["content"])
            )
            assert "test_total_is_the_sum_of_all_amounts" in retry, retry

            # Every call is in the ledger, priced at the configured rates.
            def price(prompt: int, completion: int) -> Decimal:
                return (prompt * PROMPT_PRICE + completion * COMPLETION_PRICE) / 1000

            # One row per call, written as the call happens (so a crash keeps what was spent).
            assert [row[0] for row in usage] == ["analyst"] + ["engineer"] * len(CODER_TOKENS)
            assert usage[0][1:] == ("scripted-model", *ANALYST_TOKENS, price(*ANALYST_TOKENS))
            assert [row[1:] for row in usage[1:]] == [
                ("scripted-model", prompt, completion, price(prompt, completion))
                for prompt, completion in CODER_TOKENS
            ]
            assert all(row[4] > 0 for row in usage)

            # Every message the user got says the pipeline runs with an LLM.
            chat = [
                ConsoleChatLine.model_validate_json(line)
                for line in console_chat_path(stack.state_dir).read_text().splitlines()
            ]
            mine = [c for c in chat if str(c.notification.project_id) == project_id]
            assert len(mine) >= 5, chat
            assert all(not c.notification.offline and "offline" not in c.text for c in mine)
            assert any("LLM mode" in c.text for c in mine)

            # The key went to the provider as the Authorization header, and nowhere else.
            assert provider.headers and all(
                h.get("Authorization") == f"Bearer {api_key}" for h in provider.headers
            )
            bodies = provider.raw_bodies()
            for secret in (api_key, info.vault_token):
                assert secret not in bodies
            assert all(info.vault_token not in json.dumps(h) for h in provider.headers)
            for log in Path(info.log_dir).glob("*.log"):
                assert api_key not in log.read_text(errors="replace"), log
            print(
                f"\nLLM pipeline: request to active in {elapsed:.0f} s "
                f"(stack ready in {stack.ready_seconds:.0f} s)"
            )
        finally:
            stack.stop()
            operator.join(1)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our deployed service
        return json.load(response)


def _logs(stack: LocalStackProcess) -> str:
    """The consumers' logs' tails, to explain a failed run."""
    parts = []
    for log in sorted((stack.state_dir / "logs").glob("*.log")):
        parts.append(f"--- {log.name}\n" + log.read_text(errors="replace")[-3000:])
    return "\n".join(parts)
