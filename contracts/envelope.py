"""The envelope every event carries, and the rule that makes derived event ids deterministic.

Every event is a frozen pydantic model whose first fields are the envelope. The envelope is
flat (not a wrapper) so each event's JSON Schema, and so the AsyncAPI catalogue, shows one
complete message.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

#: Namespace for uuid5 ids of derived events; never change it, or redelivered steps would
#: publish new ids and escape the duplicate window.
DERIVED_ID_NAMESPACE = uuid.UUID("6f1c1c52-3f0e-4d0a-9a53-8f3d7b0f2a11")


def derived_event_id(
    consumer: str, causation_id: uuid.UUID, event_type: str, index: int = 0
) -> uuid.UUID:
    """The id of the `index`-th event of `event_type` that `consumer` emits for one cause.

    A consumer that handles the same message twice (redelivery after a crash) produces the same
    ids, so JetStream's duplicate window and the inbox drop the second copy.
    """
    return uuid.uuid5(DERIVED_ID_NAMESPACE, f"{consumer}:{causation_id}:{event_type}:{index}")


E = TypeVar("E", bound="Event")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Envelope fields shared by every event; subclasses add the payload."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    #: Dotted event type, also the NATS subject it is published on.
    TYPE: ClassVar[str] = ""
    #: Bumped only for additive changes; a breaking change is a new event type.
    SCHEMA_VERSION: ClassVar[int] = 1

    event_id: uuid.UUID = Field(
        default_factory=uuid.uuid4,
        description="Unique id; also the Nats-Msg-Id used for JetStream de-duplication",
    )
    event_type: str = Field("", description="Dotted type name, equal to the subject")
    schema_version: int = Field(1, description="Version of this event type's schema")
    correlation_id: uuid.UUID = Field(
        description="The project's flow id: every event of one request shares it"
    )
    causation_id: uuid.UUID | None = Field(
        None, description="Id of the event that caused this one (None for an intent)"
    )
    occurred_at: datetime = Field(default_factory=utcnow, description="When it happened (UTC)")
    actor: str = Field(description="Who emitted it: a producer or consumer name, or user:<id>")

    def model_post_init(self, context: Any, /) -> None:
        # The type is a class fact; stamping it keeps serialized events self-describing.
        if not self.event_type:
            object.__setattr__(self, "event_type", self.TYPE)
        object.__setattr__(self, "schema_version", self.SCHEMA_VERSION)

    def derive(
        self,
        cls: type[E],
        *,
        actor: str,
        index: int = 0,
        flow_id: uuid.UUID | None = None,
        **payload: Any,
    ) -> E:
        """Build the event `cls` caused by this one, with a deterministic id.

        The derived event joins this one's flow unless `flow_id` names another: a command
        derived for a project from a cause outside its flow (a scheduler tick, another
        project's outcome) must carry that project's own flow id, which the analyst uses as
        its conversation thread.
        """
        return cls(
            event_id=derived_event_id(actor, self.event_id, cls.TYPE, index),
            correlation_id=flow_id or self.correlation_id,
            causation_id=self.event_id,
            actor=actor,
            **payload,
        )

    def subject_name(self) -> str:
        """The NATS subject this event is published on (its type, unless a subclass refines it)."""
        return self.TYPE

    def with_id(self, event_id: uuid.UUID) -> Self:
        return self.model_copy(update={"event_id": event_id})
