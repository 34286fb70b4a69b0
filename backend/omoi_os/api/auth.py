"""Bearer-token authentication. Tokens come from OMOI_API_TOKENS (name:token); the
name is the principal that `triggered_by` records."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(auto_error=False, description="A token from OMOI_API_TOKENS")


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status_code=401, detail=reason, headers={"WWW-Authenticate": 'Bearer realm="omoi-os"'}
    )


def match_token(presented: str, tokens: dict[str, str]) -> str | None:
    """The name whose token equals `presented`, compared in constant time. Every
    configured token is compared, so timing says nothing about which one matched."""
    matched = None
    candidate = presented.encode()
    for name, token in tokens.items():
        if hmac.compare_digest(candidate, token.encode()):
            matched = name
    return matched


def require_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The authenticated principal's name, or 401."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing bearer token (Authorization: Bearer <token>)")
    tokens: dict[str, str] = request.app.state.services.api_tokens
    name = match_token(credentials.credentials, tokens)
    if name is None:
        raise _unauthorized("invalid bearer token")
    return name


Principal = Annotated[str, Depends(require_principal)]
