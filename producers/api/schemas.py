"""Request and response bodies of the HTTP API; their descriptions are the OpenAPI document."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

#: The same bound as `ProjectRequested.description`, checked here so the user hears why.
MAX_TEXT = 8000

#: Secret names become variables in the service's `.env`, hence the shell-variable shape.
SECRET_NAME_PATTERN = r"^[A-Z][A-Z0-9_]{0,63}$"  # noqa: S105 -- a name pattern, not a secret


def _bounded(value: str, what: str) -> str:
    text = value.strip()
    if not text:
        raise ValueError(f"the {what} is empty: say in words what you want")
    if len(text) > MAX_TEXT:
        raise ValueError(
            f"the {what} has {len(text)} characters; the limit is {MAX_TEXT}: "
            "shorten it (details can follow as answers to the analyst's questions)"
        )
    return text


class ProjectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(
        description="What the service should do, in your own words "
        f"(at most {MAX_TEXT} characters)",
        examples=["A Telegram bot that reminds me to drink water every two hours"],
    )

    @field_validator("description")
    @classmethod
    def _check(cls, value: str) -> str:
        return _bounded(value, "description")


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer: str = Field(description="Your answer to the analyst's open question")

    @field_validator("answer")
    @classmethod
    def _check(cls, value: str) -> str:
        return _bounded(value, "answer")


class ArchiveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=500, description="Why, shown in the project's timeline")


class SecretValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: SecretStr = Field(
        min_length=1,
        max_length=65536,
        description="The secret value; stored in Vault only, never returned or logged",
    )


class Accepted(BaseModel):
    """The intent is on the bus; the pipeline works on it asynchronously."""

    project_id: uuid.UUID = Field(description="The project's id")
    flow_id: uuid.UUID = Field(description="Correlation id shared by every event of this project")
    status_url: str = Field(description="Where to follow the project (GET)")


class TimelineItem(BaseModel):
    at: datetime = Field(description="When it happened (UTC)")
    type: str = Field(description="Event type, e.g. project.spec.ready")
    actor: str = Field(description="Which part of the system recorded it")
    state: str | None = Field(description="The project's state after this event, if it moved")
    summary: str = Field(description="What happened, in words")


class ProjectSummary(BaseModel):
    id: uuid.UUID = Field(description="The project's id")
    flow_id: uuid.UUID = Field(description="Correlation id of the project's events")
    name: str = Field(description="Name from the spec (empty until the spec is written)")
    slug: str | None = Field(description="URL-safe name, usable as the {ref} of other endpoints")
    state: str = Field(description="Lifecycle state, e.g. awaiting_answer, building, active")
    url: str | None = Field(description="Where the deployed service answers, once active")
    offline: bool = Field(description="True when the pipeline runs without an LLM")
    created_at: datetime = Field(description="When the project was requested (UTC)")


class ProjectDetail(ProjectSummary):
    error: str | None = Field(description="Why the project failed, if it did")
    timeline: list[TimelineItem] = Field(description="Every recorded step, oldest first")


class ProjectList(BaseModel):
    projects: list[ProjectSummary] = Field(description="Your projects, newest first")


class Health(BaseModel):
    status: str = Field(description="ok while the process serves requests")
