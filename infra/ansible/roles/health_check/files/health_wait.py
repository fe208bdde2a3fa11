#!/usr/bin/env python3
"""Poll a health URL until it answers 200 or the timeout passes, in one remote invocation.

Ansible's `uri` with `until`/`retries` costs a module round trip per attempt (about a second
on a small server), which makes the timeout imprecise and a healthy start slow to notice.
Usage: health_wait.py <url> <timeout seconds> [<version>]. Exit 0 when healthy; else 1 with the
last error. With a version, a 200 counts only when the JSON body's `version` equals it: another
process already listening on the port (a stale service, another stack's) must not pass for the
release just started.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request

POLL_SECONDS = 0.25


def main(url: str, timeout: float, version: str = "") -> int:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 -- http only
                body = response.read()
                if response.status == 200 and not version:
                    return 0
                if response.status == 200:
                    answered = _version_of(body)
                    if answered == version:
                        return 0
                    last = f"HTTP 200 from version {answered!r}, expected {version!r}"
                else:
                    last = f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:
            last = str(getattr(error, "reason", error))
        if time.monotonic() >= deadline:
            print(f"{url} did not answer 200 within {timeout:g}s (last: {last})", file=sys.stderr)
            return 1
        time.sleep(POLL_SECONDS)


def _version_of(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return "(not JSON)"
    return str(document.get("version", "")) if isinstance(document, dict) else "(not an object)"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ""))
