"""Token counts of one provider response, read from its JSON body or its event stream.

OpenAI-compatible endpoints report `usage.prompt_tokens`/`completion_tokens` (embeddings only
prompt tokens); Anthropic reports `usage.input_tokens`/`output_tokens`, and when streaming
splits them across `message_start` and `message_delta` events. A response that reports
nothing counts as zero tokens rather than failing the call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class UsageReading:
    """What one call consumed, filled in as the response is read."""

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: The provider answered with a success status (a refused call costs nothing).
    answered: bool = False

    def read_json(self, body: Any) -> None:
        """Take the counts (and the model that answered) from a complete JSON response."""
        if not isinstance(body, dict):
            return
        if body.get("model"):
            self.model = str(body["model"])
        self._read_usage(body.get("usage"))

    def read_event_line(self, line: bytes) -> None:
        """Take counts from one server-sent-events line (`data: {...}`); others are ignored."""
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            return
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        if event.get("type") == "message_start" and isinstance(event.get("message"), dict):
            self.read_json(event["message"])
            return
        if event.get("model"):
            self.model = str(event["model"])
        self._read_usage(event.get("usage"))

    def _read_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        # Streams repeat or extend counts; the largest value seen is the call's total.
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        if isinstance(prompt, int):
            self.prompt_tokens = max(self.prompt_tokens, prompt)
        if isinstance(completion, int):
            self.completion_tokens = max(self.completion_tokens, completion)
