"""Who may call what: the bearer-token check, the per-token rate limit, the admin gate.

`Guards.caller` is attached to whole routers (`APIRouter(dependencies=...)`), never route by
route, so a new endpoint on a router is authenticated whether or not its author remembered;
the route-walk test checks every route of the app against an explicit public list. FastAPI
caches a dependency per request, so an endpoint that also takes the `Caller` as a parameter
gets the same object without a second database lookup or a second rate-limit hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.logging import register_secret
from producers.api.tokens import Caller, InvalidToken, authenticate
from producers.rate_limit import RateLimiter

# auto_error=False: the scheme still appears in OpenAPI, but a missing header gets our 401
# with a reason instead of Starlette's bare 403.
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiToken",
    description="`Authorization: Bearer orch_...`, issued by `orchestrator tokens create`",
)

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=reason, headers={"WWW-Authenticate": "Bearer"}
    )


@dataclass(frozen=True)
class Guards:
    """The API's FastAPI dependencies, bound to its database and rate limiter."""

    sessionmaker: async_sessionmaker[AsyncSession]
    limiter: RateLimiter

    async def caller(self, credentials: Credentials) -> Caller:
        """The request's `Caller`: 401 with the reason, or 429 with `Retry-After`."""
        if credentials is None:
            raise _unauthorized(
                "missing credentials: send `Authorization: Bearer <token>` with a token from "
                "`orchestrator tokens create`"
            )
        try:
            caller = await authenticate(self.sessionmaker, credentials.credentials)
        except InvalidToken as exc:
            raise _unauthorized(str(exc)) from exc
        # Only valid tokens are registered: unknown ones would let any client grow the registry.
        register_secret(credentials.credentials)
        # Keyed by the token's name: stable across requests, and never the token itself.
        refused = await self.limiter.hit(caller.token_name)
        if refused is not None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail=str(refused),
                headers={"Retry-After": str(refused.retry_after)},
            )
        return caller

    async def admin(self, credentials: Credentials) -> Caller:
        """The caller, if an admin; 403 with the remedy for a member token.

        The `/admin` router depends on this alone (not also on `caller`), so a request is
        authenticated and counted against the rate limit once.
        """
        caller = await self.caller(credentials)
        if not caller.is_admin:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"token {caller.token_name!r} is a member token: the /admin routes "
                "need an admin token (`orchestrator tokens create NAME --role admin`)",
            )
        return caller
