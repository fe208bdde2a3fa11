"""Events to and from the wire: JSON body plus the headers every message carries."""

from __future__ import annotations

from pydantic import ValidationError

from contracts.envelope import Event
from contracts.events import EVENT_TYPES
from contracts.topology import H_CORRELATION_ID, H_EVENT_TYPE, H_MSG_ID


class MalformedEvent(ValueError):
    """The bytes are not a valid event of a known type: a permanent, dead-letter failure."""


def encode(event: Event) -> tuple[str, bytes, dict[str, str]]:
    """Subject, body and headers; `Nats-Msg-Id` is the event id, so re-publishing is harmless."""
    headers = {
        H_MSG_ID: str(event.event_id),
        H_EVENT_TYPE: event.TYPE,
        H_CORRELATION_ID: str(event.correlation_id),
    }
    return event.subject_name(), event.model_dump_json().encode(), headers


def event_type_of(subject: str, headers: dict[str, str] | None) -> str:
    declared = (headers or {}).get(H_EVENT_TYPE)
    if declared:
        return declared
    # Ticks refine their subject with the job name; the type is the subject's known prefix.
    for known in EVENT_TYPES:
        if subject == known or subject.startswith(known + "."):
            return known
    return subject


def decode(subject: str, data: bytes, headers: dict[str, str] | None) -> Event:
    type_name = event_type_of(subject, headers)
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise MalformedEvent(f"unknown event type {type_name!r} on subject {subject!r}")
    try:
        return cls.model_validate_json(data)
    except ValidationError as exc:
        raise MalformedEvent(
            f"invalid {type_name} event: {exc.error_count()} error(s): "
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        ) from exc
