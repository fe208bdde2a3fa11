#!/usr/bin/env python3
"""Run a release's executable acceptance checks against it, from the server, in one invocation.

Usage: acceptance_run.py <base URL> <checks JSON file, or - for stdin> [<seconds per request>]
(the role runs it as `python3 -c <source> <URL> - <seconds>` with the checks on stdin: one
remote Python start). Exit 0 when every check passes; else 1, with the failing check, the
request and what the service answered (truncated) on stdout: the deploy playbook's rescue rolls
the release back and that text becomes the reason the user reads.

The checks are `ProjectSpec.checks` without the bot ones (a deploy cannot talk to Telegram on a
user's behalf): "http" checks send their steps in order, capturing values from one answer for
the next (`{name}` in a path is URL-quoted; a body or expectation string that is exactly
`{name}` takes the captured value's type); "worker" checks poll a path until its JSON answer
contains the expectation or their time is up. An expectation is a subset: an object's keys must
be present with matching values, a list's items must each match some item of the answer.

It runs from the server like the health check (`roles/health_check`), so it reaches the service
where the health check does, and only the standard library of the server's python3 is needed.
Paths were validated by the contract (relative, no scheme or host) and are re-checked here.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

#: What of an answer goes into the failure message: enough to see why, short for a chat.
MAX_SHOWN = 300
POLL_SECONDS = 0.5


class CheckFailed(Exception):
    """A check did not hold; the message says which step and what was answered."""


def matches(expected: Any, actual: Any) -> bool:
    """`expected` is a subset of `actual` (objects by key, lists by any matching item)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and matches(value, actual[key]) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return isinstance(actual, list) and all(
            any(matches(item, candidate) for candidate in actual) for item in expected
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return bool(expected == actual)


def fill(value: Any, captured: dict[str, Any]) -> Any:
    """`value` with every `{name}` replaced by what was captured under that name."""
    if isinstance(value, dict):
        return {key: fill(item, captured) for key, item in value.items()}
    if isinstance(value, list):
        return [fill(item, captured) for item in value]
    if isinstance(value, str):
        for name, found in captured.items():
            if value == "{" + name + "}":
                return found
            value = value.replace("{" + name + "}", str(found))
    return value


def fill_path(path: str, captured: dict[str, Any]) -> str:
    """The path with captured values URL-quoted, so a value cannot add segments or a host."""
    for name, found in captured.items():
        path = path.replace("{" + name + "}", quote(str(found), safe=""))
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        raise CheckFailed(f"refused to request {path!r}: a check path stays on the service")
    return path


def dig(document: Any, path: str) -> Any:
    """The value at a dotted path (`items.0.id`) of a JSON document."""
    for part in path.split("."):
        if isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        elif isinstance(document, dict) and part in document:
            document = document[part]
        else:
            raise CheckFailed(f"the answer has nothing at {path!r}")
    return document


def shown(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"


def request(base: str, method: str, path: str, body: Any, timeout: float) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    # `base` is the playbook's http://host:port and `path` a checked relative path.
    outgoing = urllib.request.Request(base + path, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(outgoing, timeout=timeout) as response:  # noqa: S310 -- http
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CheckFailed(f"{method} {path} got no answer: {reason}") from None


def parse(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return text


def run_http(base: str, check: dict[str, Any], timeout: float) -> None:
    captured: dict[str, Any] = {}
    for number, step in enumerate(check["steps"], start=1):
        path = fill_path(step["path"], captured)
        where = f"step {number} ({step['method']} {path})"
        status, text = request(
            base, step["method"], path, fill(step.get("body"), captured), timeout
        )
        if status != step["expect_status"]:
            raise CheckFailed(
                f"{where} answered {status}, expected {step['expect_status']}: {shown(text)}"
            )
        answer = parse(text)
        expected = step.get("expect_json")
        if expected is not None and not matches(fill(expected, captured), answer):
            raise CheckFailed(
                f"{where} answered {shown(text)}, which does not contain "
                f"{shown(json.dumps(fill(expected, captured)))}"
            )
        for name, json_path in (step.get("capture") or {}).items():
            try:
                captured[name] = dig(answer, json_path)
            except CheckFailed as exc:
                raise CheckFailed(f"{where}: {exc} to capture {name!r}: {shown(text)}") from None


def run_worker(base: str, check: dict[str, Any], timeout: float) -> None:
    deadline = time.monotonic() + float(check.get("within_seconds", 30))
    while True:
        last = ""
        try:
            status, text = request(base, "GET", fill_path(check["path"], {}), None, timeout)
            last = f"{status} {shown(text)}"
            if status == 200 and matches(check["expect_json"], parse(text)):
                return
        except CheckFailed as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise CheckFailed(
                f"GET {check['path']} did not come to contain "
                f"{shown(json.dumps(check['expect_json']))} within "
                f"{check.get('within_seconds', 30)} s; last answer: {last}"
            )
        time.sleep(POLL_SECONDS)


def run_checks(base: str, checks: list[dict[str, Any]], timeout: float = 10.0) -> int:
    """0 when every check holds; else 1 after printing the first failure."""
    runners = {"http": run_http, "worker": run_worker}
    for check in checks:
        runner = runners.get(check.get("kind", ""))
        if runner is None:
            continue
        try:
            runner(base, check, timeout)
        except CheckFailed as exc:
            print(f"acceptance check {check.get('name', '')!r} failed: {exc}")
            return 1
    print(f"{len(checks)} acceptance checks passed")
    return 0


if __name__ == "__main__":
    if sys.argv[2] == "-":
        loaded = json.load(sys.stdin)
    else:
        with open(sys.argv[2], encoding="utf-8") as source:
            loaded = json.load(source)
    sys.exit(
        run_checks(
            sys.argv[1].rstrip("/"), loaded, float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
        )
    )
