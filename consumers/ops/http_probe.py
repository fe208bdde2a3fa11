"""The health probe over HTTP: 2xx within the timeout is healthy."""

from __future__ import annotations

import httpx


class HttpHealthProbe:
    def __init__(self, timeout: float = 5.0) -> None:
        self._timeout = timeout

    async def healthy(self, url: str) -> tuple[bool, str]:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.get(url)
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}"[:200]
        return response.is_success, f"HTTP {response.status_code}"
