"""What the LLM analyst is told. Built only from the user's words: no secret ever enters it.

The model answers by calling one of two tools (OpenAI tool calling / Anthropic tool use), so
the answer is structured and validated against the same `ProjectSpec` the offline rules fill.
"""

from __future__ import annotations

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field

SYSTEM_PROMPT = """\
You are the analyst of a platform that turns a person's description of a small software \
project into a running service. Read the description (and any answers to your earlier \
questions) and call exactly one tool:

- `ProjectSpec` when you know what the service must do. Fill every field:
  * name: short human name; slug: lowercase Latin letters, digits and dashes, starting with a \
letter (transliterate other scripts, e.g. "Расходы" -> "raskhody");
  * kinds: one or more of "http" (HTTP API), "telegram_bot", "worker" (background job);
  * language: ISO 639-1 code of the user's language;
  * entities with typed fields (str, int, float, bool, date, datetime);
  * endpoints for HTTP services (always include GET /health), commands for bots (without \
the slash; always include "start");
  * config: environment variables the service reads. Secrets (tokens, API keys, passwords) \
are listed by NAME only with secret=true and no default: e.g. TELEGRAM_BOT_TOKEN for every \
bot. Add DATABASE_URL only if the service stores data;
  * acceptance_criteria: concrete checks a test can make, in words;
  * checks: the same checks made executable. "http": ordered steps (method, path relative \
to the service such as /expenses, JSON body, expect_status, expect_json = a subset the answer \
must contain, capture = name -> dotted path in the answer, reused later as {name}), e.g. POST \
/expenses -> 201 capturing id, then GET /expenses/{id} -> 200 containing the sent fields. \
"bot": a message and a reply_pattern (regular expression). "worker": a path showing the \
job's effect (e.g. /worker/status) and the expect_json it comes to contain;
  * summary: one paragraph in the user's language.
- `AskClarification` only when the description is too thin to know what the service does \
(e.g. "make me a bot"). Ask one short question in the user's language.

Never ask for secret values and never put credentials anywhere in the spec."""

DECIDE_NOW = """\
You have already asked the maximum number of questions. Call `ProjectSpec` now: choose \
sensible defaults for anything still unknown and say in the summary which defaults you assumed."""

RETRY = """\
That answer was not usable: {error}
Call the tool again with corrected arguments."""


class AskClarification(BaseModel):
    """Ask the user one question because the description is too thin to write a spec."""

    question: str = Field(description="One short question, in the user's language")
    missing: list[str] = Field(
        default_factory=list,
        description="Which parts of the spec are unknown, e.g. purpose, kind, entities",
    )


def build_messages(
    description: str, questions: list[str], answers: list[str], decide_now: bool
) -> list[BaseMessage]:
    """The conversation the analyst sees for one round."""
    lines = ["Project description:", description.strip()]
    if answers:
        lines += ["", "Your earlier questions and the user's answers:"]
        for index, answer in enumerate(answers):
            question = questions[index] if index < len(questions) else "(question not recorded)"
            lines += [f"Q{index + 1}: {question}", f"A{index + 1}: {answer.strip()}"]
    if decide_now:
        lines += ["", DECIDE_NOW]
    return [SystemMessage(content=SYSTEM_PROMPT), HumanMessage(content="\n".join(lines))]
