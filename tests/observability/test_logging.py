"""Log lines are JSON with the message context bound, and secrets never survive rendering."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from infra.logging import (
    bind_message_context,
    configure_logging,
    get_logger,
    is_secret_key,
    register_secret,
)


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("test-process", "DEBUG", stream=stream)
    yield stream
    configure_logging("test-process", "INFO")


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


def fresh_secret() -> str:
    return f"s3cr3t-{uuid.uuid4().hex}"


def test_lines_are_json_with_the_standard_fields(output: io.StringIO) -> None:
    get_logger("orders").info("step.done", emitted=["a"])
    (line,) = lines(output)
    assert line["event"] == "step.done"
    assert line["level"] == "info"
    assert line["logger"] == "orders"
    assert line["process"] == "test-process"
    assert line["timestamp"].endswith("Z")
    assert line["emitted"] == ["a"]


def test_stdlib_loggers_go_through_the_same_pipeline(output: io.StringIO) -> None:
    logging.getLogger("nats.aio.client").warning("reconnecting to %s", "nats://x:4222")
    (line,) = lines(output)
    assert line == {**line, "event": "reconnecting to nats://x:4222", "logger": "nats.aio.client"}
    assert line["level"] == "warning"


def test_message_context_is_bound_for_its_duration_only(output: io.StringIO) -> None:
    log = get_logger("c")
    with bind_message_context(
        event_id="e-1",
        correlation_id="flow-1",
        project_id="p-1",
        event_type="project.spec.ready",
        consumer="coordinator-outcomes",
    ):
        log.info("inside")
        logging.getLogger("faststream").info("library inside")
    log.info("outside")
    inside, library, outside = lines(output)
    for line in (inside, library):
        assert line["event_id"] == "e-1"
        assert line["correlation_id"] == "flow-1"
        assert line["project_id"] == "p-1"
        assert line["consumer"] == "coordinator-outcomes"
    assert "event_id" not in outside


def test_project_id_is_omitted_when_there_is_none(output: io.StringIO) -> None:
    with bind_message_context(
        event_id="e", correlation_id="c", project_id=None, event_type="t", consumer="x"
    ):
        get_logger().info("x")
    assert "project_id" not in lines(output)[0]


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "DB_PASSWORD",
        "token",
        "github_token",
        "accessToken",
        "secret",
        "secret_id",
        "private_key",
        "privateKey",
        "api_key",
        "apiKey",
        "Authorization",
        "client-secret",
    ],
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "prompt_tokens",
        "completion_tokens",
        "max_tokens",
        "secret_names",
        "api_key_secret_path",
        "event",
        "description",
        "keyboard",
        "author",
    ],
)
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_values_under_secret_keys_are_masked_in_nested_structures(output: io.StringIO) -> None:
    get_logger().info(
        "x",
        password="hunter22",
        config={"db": {"Password": "p"}, "headers": [{"Authorization": "B"}]},
        prompt_tokens=12,
    )
    (line,) = lines(output)
    assert line["password"] == "***"
    assert line["config"] == {"db": {"Password": "***"}, "headers": [{"Authorization": "***"}]}
    assert line["prompt_tokens"] == 12


def test_registered_values_are_masked_anywhere(output: io.StringIO) -> None:
    secret = fresh_secret()
    register_secret(secret)
    get_logger().info(f"connecting with {secret}", url=f"https://u:{secret}@h", args=(secret,))
    raw = output.getvalue()
    assert secret not in raw
    line = lines(output)[0]
    assert line["event"] == "connecting with ***"
    assert line["url"] == "https://u:***@h"


def test_a_secret_inside_an_exception_is_masked_in_the_traceback(output: io.StringIO) -> None:
    secret = fresh_secret()
    register_secret(secret)

    def call_upstream(token: str) -> None:
        raise PermissionError(f"token {token!r} rejected")

    try:
        call_upstream(secret)
    except PermissionError:
        get_logger("upstream").exception("call failed")
    try:
        raise ValueError({"credentials": {"k": secret}})
    except ValueError:
        logging.getLogger("hvac").exception("library failure")
    raw = output.getvalue()
    assert secret not in raw
    first, second = lines(output)
    assert "PermissionError: token '***' rejected" in first["exception"]
    assert "Traceback" in first["exception"]
    assert "***" in second["exception"]


def test_multiline_secrets_are_masked_line_by_line(output: io.StringIO) -> None:
    body = uuid.uuid4().hex + uuid.uuid4().hex
    key = f"-----BEGIN KEY-----\n{body}\n-----END KEY-----\n"
    register_secret(key)
    get_logger().info("key file", content=key, first_line_only=body)
    assert body not in output.getvalue()


def test_short_values_are_not_registered(output: io.StringIO) -> None:
    register_secret("admin")
    get_logger().info("admin logged in")
    assert lines(output)[0]["event"] == "admin logged in"


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("p", "LOUD")
    structlog.reset_defaults()
    configure_logging("test-process")
