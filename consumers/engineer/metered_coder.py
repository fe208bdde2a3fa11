"""The in-process coding mode: the LangGraph loop with its model behind the metering proxy.

Per run it starts the proxy on a loopback port and builds the chat model against it with the
run's one-time token, so every call is recorded in `llm_usage` as it happens and refused once
the budget or the run's time is spent, exactly as in container mode. The key stays in the
proxy; the chat model object never holds it.
"""

from __future__ import annotations

from collections.abc import Callable

from consumers.engineer.agent import (
    AgentMode,
    AgentOutcome,
    AppChecker,
    CodingTask,
    Heartbeat,
    TestRunner,
)
from consumers.engineer.llm_proxy.ledger import Ledger
from consumers.engineer.llm_proxy.run import ProxyLauncher
from consumers.engineer.test_runner import TestReport
from infra.llm import LLMConfigurationError, build_chat_model, proxy_base_url
from infra.settings import LLMSettings


class MeteredCoder:
    """`CodingAgent` of the in-process mode: the loop, with its model behind the metering proxy.

    The outcome carries no usage: the proxy wrote each call to `llm_usage` already. A refusal
    by the proxy (budget or time spent) ends the run as a failure with the proxy's reason.
    """

    mode: AgentMode = "llm"

    def __init__(
        self,
        proxy: ProxyLauncher,
        ledger: Callable[[CodingTask], Ledger],
        runner: TestRunner,
        settings: LLMSettings,
        *,
        time_limit_seconds: float,
        app_checker: AppChecker | None = None,
    ) -> None:
        self._proxy = proxy
        self._app_checker = app_checker
        self._ledger = ledger
        self._runner = runner
        self._settings = settings
        self._time_limit = time_limit_seconds

    async def run(self, task: CodingTask, heartbeat: Heartbeat) -> AgentOutcome:
        # LangGraph and LangChain load with the first LLM run: an offline engineer never does.
        from consumers.engineer.langgraph_coder import LangGraphCoder

        async with self._proxy.on_loopback(self._ledger(task)) as proxied:
            settings = self._settings.model_copy(
                update={"base_url": proxy_base_url(self._settings, proxied.base_url or "")}
            )
            llm = build_chat_model(settings, proxied.token)
            if llm is None:
                raise LLMConfigurationError(
                    "ORCH_ENGINEER_MODE=inprocess needs an LLM provider; set "
                    "ORCH_LLM__PROVIDER or use ORCH_ENGINEER_MODE=offline"
                )
            try:
                outcome = await LangGraphCoder(
                    llm, self._runner, self._settings, time_limit_seconds=self._time_limit,
                    app_checker=self._app_checker,
                ).run(task, heartbeat)
            except Exception:
                if proxied.proxy.refused is None:
                    raise
                outcome = None
            refused = proxied.proxy.refused
        if refused is not None:
            return AgentOutcome(
                passed=False, iterations=outcome.iterations if outcome else 0,
                report=outcome.report if outcome else TestReport(passed=0, failed=0),
                summary="", reason=refused,
            )
        assert outcome is not None
        return AgentOutcome(
            passed=outcome.passed, iterations=outcome.iterations, report=outcome.report,
            summary=outcome.summary, reason=outcome.reason,
        )
