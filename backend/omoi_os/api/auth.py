"""Bearer-token authentication, the default way of naming the caller. Tokens come
from OMOI_API_TOKENS (name:token); the name is what `triggered_by` records. A host
with its own authentication passes its own dependency instead."""

import hmac
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(auto_error=False, description="A token from OMOI_API_TOKENS")


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status_code=401, detail=reason, headers={"WWW-Authenticate": 'Bearer realm="omoi-os"'}
    )


def match_token(presented: str, tokens: Mapping[str, str]) -> str | None:
    """The name whose token equals `presented`, compared in constant time. Every
    configured token is compared, so timing says nothing about which one matched."""
    matched = None
    candidate = presented.encode()
    for name, token in tokens.items():
        if hmac.compare_digest(candidate, token.encode()):
            matched = name
    return matched


def bearer_principal(tokens: Mapping[str, str]) -> Callable[..., Any]:
    """A dependency answering the name of the caller's bearer token, or 401."""

    def principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise _unauthorized("missing bearer token (Authorization: Bearer <token>)")
        name = match_token(credentials.credentials, tokens)
        if name is None:
            raise _unauthorized("invalid bearer token")
        return name

    return principal
