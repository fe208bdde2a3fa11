"""What the indexer remembers of an event, and how it refuses a malformed search (no I/O)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from consumers.indexer import documents
from consumers.indexer.search_responder import SearchResponder
from contracts import events as ev
from contracts.spec import Endpoint, ProjectSpec, ServiceKind
from infra.memory import MemoryHit, MemoryKind, Scope

PROJECT = uuid.UUID(int=7)


def test_a_spec_reads_as_its_name_summary_and_endpoints() -> None:
    spec = ProjectSpec(
        name="Expenses",
        slug="expenses",
        summary="Tracks what I spend",
        kinds=(ServiceKind.HTTP,),
        endpoints=(Endpoint(method="POST", path="/expenses", summary="adds one"),),
    )
    assert documents.spec_text(spec) == (
        "Expenses (http): Tracks what I spend\nendpoint POST /expenses: adds one"
    )


def test_blank_answers_are_not_remembered_and_indexes_name_the_rest() -> None:
    docs = documents.answers("tg:1", PROJECT, ("by courier", "  ", "daily"), "revision:2:")
    assert [(d.source_id, d.text, d.kind) for d in docs] == [
        ("revision:2:answer:0", "by courier", MemoryKind.ANSWER),
        ("revision:2:answer:2", "daily", MemoryKind.ANSWER),
    ]


def test_an_outcome_is_one_timeline_line_keyed_by_its_event() -> None:
    failed = ev.DeployFailed(
        correlation_id=uuid.uuid4(),
        actor="deployer",
        project_id=PROJECT,
        commit="b" * 40,
        reason="port in use",
        rolled_back=False,
    )
    doc = documents.outcome("tg:1", PROJECT, failed)
    assert doc is not None and doc.source_id == str(failed.event_id)
    assert doc.text.endswith(f"deploy of {'b' * 12} failed: port in use")
    archived = ev.ProjectArchived(correlation_id=uuid.uuid4(), actor="c", project_id=PROJECT)
    assert documents.outcome("tg:1", PROJECT, archived) is None


class NoMemory:
    async def search(
        self, scope: Scope, text: str, *, kinds: Sequence[MemoryKind] = (), limit: int = 5
    ) -> list[MemoryHit]:
        raise AssertionError("a malformed request must not reach the store")


async def test_a_malformed_or_unscoped_search_is_refused_with_a_reason() -> None:
    responder = SearchResponder(NoMemory())
    for data, where in (
        (b"not json", "request"),
        (b'{"text": "shop"}', "user_id"),
        (b'{"user_id": "", "text": "shop"}', "user_id"),
        (b'{"user_id": "tg:1", "text": "shop", "limit": 1000}', "limit"),
    ):
        reply = await responder.reply_to(data)
        assert reply.hits == () and reply.error is not None and where in reply.error, reply
