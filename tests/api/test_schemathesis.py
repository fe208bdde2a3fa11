"""Schemathesis against the live API: generated requests for every operation of its OpenAPI
document, sent to a real uvicorn over real PostgreSQL, JetStream and OpenBao with an admin
token, must get no 5xx and only answers the document describes.

Schemathesis calls the server synchronously (requests), so it runs in a worker thread while the
event loop keeps serving. The number of examples per operation and mode is bounded so the run
stays under a minute on two cores; the figures are printed for the record (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from nats.aio.client import Client
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Err
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.bus.publisher import JetStreamPublisher
from infra.db.models import ProjectState
from infra.settings import QuotaSettings
from infra.vault import VaultClient
from producers.api.app import build_api
from producers.api.settings import ApiSettings
from tests.api.conftest import ApiUser, SeedProject, served

EXAMPLES_PER_OPERATION = 6

#: Two departures from schemathesis's defaults, each a decision of this API:
#: - 413 is a correct rejection of a body too large to read (the size limit runs before
#:   parsing, so an oversized invalid body never reaches validation);
#: - unknown query parameters are ignored, as most HTTP APIs do, rather than refused;
#: - an adoption's URL must name this system's git host, which no schema can state: a
#:   well-formed URL elsewhere is refused with 422 and its reason.
CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {"allow-extra-parameters": False},
        "operations": [
            {
                "include-path": "/projects/adopt",
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "401", "403", "404", "422", "429"]
                    }
                },
            }
        ],
        "checks": {
            "negative_data_rejection": {
                # schemathesis's default list, plus 413
                "expected-statuses": [
                    *("400", "401", "403", "404", "405", "406", "409", "413", "415", "422"),
                    *("428", "429", "5xx"),
                ]
            }
        },
    }
)


@dataclass
class Run:
    """What the run did: operations, cases sent, and each distinct failure."""

    operations: int = 0
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _fuzz(base_url: str, token: str) -> Run:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=CONFIG, timeout=10)
    headers = {"Authorization": f"Bearer {token}"}
    run = Run()
    for result in schema.get_all_operations():
        run.operations += 1
        if isinstance(result, Err):
            run.failures.append(f"the document has an invalid operation: {result.err()}")
            continue
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            started = time.perf_counter()
            try:
                _fuzz_one(run, base_url, headers, operation, mode)
            except Unsatisfiable:
                # An operation with no parameters and no body has no invalid input to send.
                assert mode == GenerationMode.NEGATIVE, operation.label
            run.seconds[f"{operation.label} {mode.value}"] = time.perf_counter() - started
    return run


def _fuzz_one(
    run: Run,
    base_url: str,
    headers: dict[str, str],
    operation: APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
) -> None:
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Case[Any]) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=15)
        run.cases += 1
        run.statuses[response.status_code] = run.statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, headers=headers)
        except (Failure, FailureGroup) as exc:
            failures = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
            for failure in failures:
                text = f"{operation.label} [{mode.value}]: {failure.title}"
                if not any(f.startswith(text) for f in run.failures):
                    run.failures.append(
                        f"{text}: {failure.message[:200]} -- sent {case.path_parameters} "
                        f"{case.query} {str(case.body)[:120]} got {response.status_code} "
                        f"{response.text[:200]}"
                    )

    check()


async def test_generated_requests_find_no_server_error_and_no_schema_violation(
    nc: Client,
    sessionmaker: async_sessionmaker[AsyncSession],
    api_vault: VaultClient,
    root: ApiUser,
    seed_project: SeedProject,
) -> None:
    # Some state for the generated references to meet: a project waiting for an answer.
    await seed_project(root.user_id, state=ProjectState.AWAITING_ANSWER, slug="fuzz-target")
    # The rate limit is raised so the run measures the schema, not the limiter (tested apart).
    app = build_api(
        JetStreamPublisher.from_client(nc),
        sessionmaker,
        api_vault,
        jetstream=nc.jetstream(),
        settings=ApiSettings(rate_limit="100000/minute"),
        quotas=QuotaSettings(projects_per_day=100000),
    )
    started = time.perf_counter()
    async with served(app) as base_url:
        run = await asyncio.to_thread(_fuzz, base_url, root.token)
    elapsed = time.perf_counter() - started

    print(
        f"schemathesis: {run.operations} operations, {run.cases} cases, "
        f"{len(run.failures)} failures in {elapsed:.1f} s; "
        f"statuses {dict(sorted(run.statuses.items()))}"
    )
    for label, seconds in sorted(run.seconds.items(), key=lambda item: -item[1])[:5]:
        print(f"  {seconds:5.1f} s  {label}")
    assert run.operations >= 17
    assert run.cases >= run.operations * 2
    assert not [status for status in run.statuses if status >= 500]
    assert run.failures == [], "\n".join(run.failures)
    # Generated data does reach the handlers, not only the validation layer.
    assert any(200 <= status < 300 for status in run.statuses)
