"""The scripted provider speaks the protocol the real clients expect (JSON and SSE)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import openai
import pytest
from pydantic import BaseModel, SecretStr

from tests.fakes.openai_server import Reply, ScriptedOpenAI

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI


class Weather(BaseModel):
    city: str
    days: int


def client(server: ScriptedOpenAI, **options: Any) -> ChatOpenAI:
    from langchain_openai import ChatOpenAI  # on demand, as the processes import it

    return ChatOpenAI(
        base_url=server.base_url, api_key=SecretStr("k"), model="m", max_retries=0, **options
    )


@pytest.mark.parametrize("streaming", [False, True])
async def test_text_and_tool_calls_with_usage(
    openai_server: ScriptedOpenAI, streaming: bool
) -> None:
    openai_server.replies(
        Reply.text("Hello there", prompt_tokens=7, completion_tokens=3),
        Reply.tool_call("Weather", {"city": "Riga", "days": 3}),
    )
    llm = client(openai_server, streaming=streaming, stream_usage=True)

    text = await llm.ainvoke("hi")
    assert text.content == "Hello there"
    assert text.usage_metadata is not None
    assert (text.usage_metadata["input_tokens"], text.usage_metadata["output_tokens"]) == (7, 3)

    call = await llm.bind_tools([Weather]).ainvoke("weather in Riga")
    assert call.tool_calls[0]["name"] == "Weather"
    assert call.tool_calls[0]["args"] == {"city": "Riga", "days": 3}
    assert call.usage_metadata is not None
    assert call.usage_metadata["input_tokens"] > 0
    assert [request.get("stream", False) for request in openai_server.requests] == [
        streaming,
        streaming,
    ]


async def test_a_callable_script_sees_each_request(openai_server: ScriptedOpenAI) -> None:
    openai_server.respond_with(lambda request: Reply.text(request["messages"][-1]["content"][::-1]))
    llm = client(openai_server)
    assert (await llm.ainvoke("abc")).content == "cba"
    assert (await llm.ainvoke("xyz")).content == "zyx"


async def test_errors_and_an_exhausted_script_fail_loudly(openai_server: ScriptedOpenAI) -> None:
    openai_server.replies(Reply.error(429, "slow down"))
    llm = client(openai_server)
    with pytest.raises(openai.RateLimitError, match="slow down"):
        await llm.ainvoke("hi")
    with pytest.raises(openai.BadRequestError, match="script exhausted at request 2"):
        await llm.ainvoke("hi again")
