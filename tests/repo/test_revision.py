"""An offline revision rendered over the live commit, against a real git daemon: the new commit
sits on top of the current one, adds what the revised spec renders, and a redelivery (or a
branch moved by someone else) never commits twice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consumers.repo.errors import RepoHostError
from consumers.repo.local_forge import LocalForge
from consumers.repo.revision import RevisionRenderer
from consumers.repo.scaffold import JinjaScaffolder
from consumers.repo.service import RepoService
from contracts.spec import Entity, EntityField, ServiceKind
from tests.repo.conftest import git, make_spec

REQUESTED_AT = datetime(2026, 5, 4, 10, 21, 7, tzinfo=UTC)


async def test_the_revision_is_committed_on_top_of_the_live_commit_once(
    forge: LocalForge, tmp_path: Path
) -> None:
    spec = make_spec(ServiceKind.HTTP)
    project_id = uuid.uuid4()
    live = await RepoService(forge, JinjaScaffolder()).create(
        spec, project_id, requested_at=REQUESTED_AT
    )
    revised = spec.model_copy(
        update={
            "entities": (
                *spec.entities,
                Entity(name="Contact", fields=(EntityField(name="phone"),)),
            )
        }
    )
    renderer = RevisionRenderer(forge, JinjaScaffolder())

    first = await renderer.render(revised, project_id, 2, live.commit, requested_at=REQUESTED_AT)
    again = await renderer.render(revised, project_id, 2, live.commit)

    assert again == first
    assert first.commit != live.commit
    assert "app/models.py" in first.files
    clone = tmp_path / "clone"
    git("clone", "--quiet", live.clone_url, str(clone))
    assert git("rev-parse", "HEAD", cwd=clone) == first.commit
    assert git("rev-parse", "HEAD^", cwd=clone) == live.commit
    message = git("log", "-1", "--format=%B", cwd=clone)
    assert f"Project-Id: {project_id}" in message and "Revision: 2" in message
    assert "class Contact" in (clone / "app/models.py").read_text()

    # Revision 2 failed after its push; revision 3 starts from the live commit's files again.
    third = await renderer.render(spec, project_id, 3, live.commit)
    git("pull", "--quiet", cwd=clone)
    assert git("rev-parse", "HEAD^", cwd=clone) == first.commit
    assert git("diff", "--stat", live.commit, third.commit, cwd=clone) == ""

    with pytest.raises(RepoHostError, match="rewritten outside the orchestrator"):
        await renderer.render(revised, project_id, 4, "f" * 40)
