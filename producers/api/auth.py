"""The bearer-token check every endpoint but /healthz and /metrics depends on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.logging import register_secret
from producers.api.tokens import Caller, InvalidToken, authenticate

# auto_error=False: the scheme still appears in OpenAPI, but a missing header gets our 401
# with a reason instead of Starlette's bare 403.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiToken",
    description="`Authorization: Bearer orch_...`, issued by `orchestrator tokens create`",
)


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=reason, headers={"WWW-Authenticate": "Bearer"}
    )


def caller_dependency(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> Callable[[HTTPAuthorizationCredentials | None], Awaitable[Caller]]:
    """A FastAPI dependency resolving the request's bearer token to its `Caller`."""

    async def current_caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        if credentials is None:
            raise _unauthorized(
                "missing credentials: send `Authorization: Bearer <token>` with a token from "
                "`orchestrator tokens create`"
            )
        try:
            caller = await authenticate(sessionmaker, credentials.credentials)
        except InvalidToken as exc:
            raise _unauthorized(str(exc)) from exc
        # Only valid tokens are registered: unknown ones would let any client grow the registry.
        register_secret(credentials.credentials)
        return caller

    return current_caller
