"""The console chat's receiving end: a JSON-lines file the `orchestrator chat` tails, plus stdout.

The line format is `infra.console_chat_file.ConsoleChatLine`: the
notification itself and the text a person reads, so the chat can track open questions.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TextIO

from contracts.events import NotificationRequested
from infra.console_chat_file import ConsoleChatLine, console_chat_path


class ConsoleChatFile:
    """Appends each notification to `<state_dir>/console-chat.jsonl` and prints it."""

    def __init__(self, state_dir: Path, stdout: TextIO = sys.stdout) -> None:
        self.path = console_chat_path(state_dir)
        self._stdout = stdout

    async def write(self, notification: NotificationRequested, text: str) -> None:
        line = ConsoleChatLine(notification=notification, text=text).model_dump_json() + "\n"
        await asyncio.to_thread(self._append, line)
        project = f"[{str(notification.project_id)[:8]}] " if notification.project_id else ""
        print(f"{project}{notification.kind.value}: {text}", file=self._stdout, flush=True)

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write of one line in append mode: concurrent replicas never interleave a line.
        with self.path.open("a", encoding="utf-8") as file:
            file.write(line)
