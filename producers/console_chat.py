"""`orchestrator chat`: the embedded stack's chat, speaking the same intents as the Telegram bot.

What the user types becomes `ProjectRequested` (or `ClarificationAnswered` while a question is
open); what the pipeline says comes back through the notifier, which appends every console
notification to `<state_dir>/console-chat.jsonl` (format: `infra.console_chat_file`). The chat
tails that file, prints each line, and remembers open questions so a typed line can answer them.
"""

from __future__ import annotations

import asyncio
import getpass
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from pydantic import ValidationError

from contracts.events import NotificationKind, NotificationRequested
from infra.bus.publisher import Publisher
from infra.console_chat_file import ConsoleChatLine, console_chat_path
from producers.credential_scan import CredentialInText, refuse_credentials
from producers.intents import clarification_answer, project_request

MAX_TEXT_LENGTH = 8000
#: Where a refused credential belongs instead (the value is read from standard input).
HOW_TO_STORE = 'printf %s "$VALUE" | orchestrator secrets set <project> NAME'

HELP = """\
Describe the service you want in one message, and I will build and deploy it.
  <description>                  start a project (or answer the open question)
  /new <description>             start a project even while a question is open
  /answer <project> <text>       answer the question of one project (id or its first characters)
  /help                          this text
  /quit                          leave the chat (the pipeline keeps running)"""


class LineReader(Protocol):
    """Where typed lines come from (`asyncio.StreamReader` fits: stdin or a test's pipe)."""

    def readline(self) -> Awaitable[bytes]: ...


@dataclass(frozen=True)
class _OpenQuestion:
    project_id: uuid.UUID
    flow_id: uuid.UUID


@dataclass
class _ChatState:
    """Questions the pipeline asked and nobody answered yet, oldest first."""

    open_questions: dict[uuid.UUID, _OpenQuestion] = field(default_factory=dict)

    def observe(self, notification: NotificationRequested) -> None:
        project_id = notification.project_id
        if project_id is None:
            return
        if notification.kind is NotificationKind.QUESTION:
            self.open_questions[project_id] = _OpenQuestion(project_id, notification.correlation_id)
        elif notification.kind in (NotificationKind.DONE, NotificationKind.FAILURE):
            self.open_questions.pop(project_id, None)

    def find(self, prefix: str) -> _OpenQuestion | list[uuid.UUID]:
        """The open question whose project id starts with `prefix`, or the candidates."""
        matches = [q for pid, q in self.open_questions.items() if str(pid).startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        return [q.project_id for q in matches]


async def run_console_chat(
    publisher: Publisher,
    state_dir: Path,
    input_stream: LineReader,
    output: TextIO,
    *,
    user_id: str | None = None,
    poll_interval: float = 0.2,
) -> None:
    """Chat until the input ends or the user types /quit.

    Notifications already in the file when the chat starts are not replayed; only what
    arrives while it runs is printed.
    """
    chat = _ConsoleChat(
        publisher=publisher,
        path=console_chat_path(state_dir),
        output=output,
        user_id=user_id or f"cli:{getpass.getuser()}",
        poll_interval=poll_interval,
    )
    await chat.run(input_stream)


class _ConsoleChat:
    def __init__(
        self,
        *,
        publisher: Publisher,
        path: Path,
        output: TextIO,
        user_id: str,
        poll_interval: float,
    ) -> None:
        self._publisher = publisher
        self._path = path
        self._output = output
        self._user_id = user_id
        self._poll_interval = poll_interval
        self._state = _ChatState()

    async def run(self, input_stream: LineReader) -> None:
        offset = self._path.stat().st_size if self._path.exists() else 0
        self._say(f"Orchestrator console chat ({self._user_id}). /help lists the commands.")
        tail = asyncio.create_task(self._tail(offset), name="console-chat-tail")
        try:
            while True:
                raw = await input_stream.readline()
                if not raw:
                    break
                if not await self._handle(raw.decode("utf-8", errors="replace").strip()):
                    break
        finally:
            tail.cancel()
            await asyncio.gather(tail, return_exceptions=True)

    # ------------------------------------------------------------------ typed lines

    async def _handle(self, line: str) -> bool:
        """Act on one typed line; False ends the chat."""
        if not line:
            return True
        if len(line) > MAX_TEXT_LENGTH:
            self._say(f"That is {len(line)} characters; please keep it under {MAX_TEXT_LENGTH}.")
            return True
        command, _, rest = line.partition(" ")
        rest = rest.strip()
        if command in ("/quit", "/exit"):
            self._say("Bye. The pipeline keeps running without the chat.")
            return False
        if command == "/help":
            self._say(HELP)
        elif command == "/new" and not rest:
            self._say("Usage: /new <description>")
        elif command == "/new":
            await self._new_project(rest)
        elif command == "/answer":
            await self._answer_command(rest)
        elif line.startswith("/"):
            self._say(f"Unknown command {command}.\n{HELP}")
        elif self._state.open_questions:
            newest = list(self._state.open_questions.values())[-1]
            await self._answer(newest, line)
        else:
            await self._new_project(line)
        return True

    async def _new_project(self, description: str) -> None:
        if self._carries_credential(description):
            return
        request = project_request(description, user_id=self._user_id, source="console")
        await self._publisher.publish(request)
        self._say(f"Project {request.project_id} accepted, I'll report progress here.")

    async def _answer_command(self, rest: str) -> None:
        prefix, _, text = rest.partition(" ")
        text = text.strip()
        if not prefix or not text:
            self._say("Usage: /answer <project> <text>")
            return
        found = self._state.find(prefix)
        if isinstance(found, _OpenQuestion):
            await self._answer(found, text)
        elif found:
            self._say(f"{prefix} matches several projects: {', '.join(map(str, found))}")
        else:
            self._say(f"No open question for a project starting with {prefix}.")

    async def _answer(self, question: _OpenQuestion, text: str) -> None:
        if self._carries_credential(text):
            return
        await self._publisher.publish(
            clarification_answer(
                question.project_id,
                question.flow_id,
                text,
                user_id=self._user_id,
                source="console",
            )
        )
        self._state.open_questions.pop(question.project_id, None)
        self._say(f"Thanks, your answer went to project {question.project_id}.")

    def _carries_credential(self, text: str) -> bool:
        """Refuse (and say why) text with a credential: it would be stored and sent to the LLM."""
        try:
            refuse_credentials(text, how_to_store=HOW_TO_STORE)
        except CredentialInText as exc:
            self._say(str(exc))
            return True
        return False

    # ------------------------------------------------------------------ notifications

    async def _tail(self, offset: int) -> None:
        pending = b""
        while True:
            chunk = await asyncio.to_thread(self._read_from, offset)
            offset += len(chunk)
            pending += chunk
            # Only complete lines: the notifier may be halfway through writing the last one.
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self._show(raw)
            await asyncio.sleep(self._poll_interval)

    def _read_from(self, offset: int) -> bytes:
        if not self._path.exists():
            return b""
        with self._path.open("rb") as file:
            file.seek(offset)
            return file.read()

    def _show(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            line = ConsoleChatLine.model_validate_json(raw)
        except ValidationError:
            self._say(f"(unreadable line in {self._path.name} skipped)")
            return
        notification = line.notification
        self._state.observe(notification)
        project = f"[{str(notification.project_id)[:8]}] " if notification.project_id else ""
        self._say(f"{project}{line.text}")
        if notification.kind is NotificationKind.QUESTION:
            self._say("(type your answer)")

    def _say(self, text: str) -> None:
        self._output.write(text + "\n")
        self._output.flush()
