"""Optional API key for prediction and admin endpoints.

When ``serving.api_key`` is set, callers send it as ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``. Keys are compared in constant time (``hmac.compare_digest``) and never
logged or echoed. Liveness, readiness and metrics stay open so probes and Prometheus need no
secret.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from financemath_mlops.serving.errors import ApiError

# auto_error=False: we answer in our own error shape; these objects also document the schemes.
bearer_scheme = HTTPBearer(auto_error=False, description="Authorization: Bearer <api key>")
header_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key")


def key_matches(expected: str, offered: str | None) -> bool:
    """Compare as bytes: the configured key in UTF-8 against the header's raw bytes.

    ASGI servers hand header values over as bytes and Starlette decodes them as latin-1, so
    encoding back to latin-1 recovers exactly what the client sent (a UTF-8 key included).
    """
    if not offered:
        return False
    try:
        raw = offered.encode("latin-1")
    except UnicodeEncodeError:  # not from a real header (a str built in-process)
        raw = offered.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(expected.encode("utf-8"), raw)


def configured_key(request: Request) -> str | None:
    secret = request.app.state.service.settings.serving.api_key
    return secret.get_secret_value() if secret is not None else None


async def require_api_key(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    header: str | None = Depends(header_scheme),
) -> None:
    """Pass when no key is configured or when either header carries the right key."""
    expected = configured_key(request)
    if expected is None:
        return
    # Check both even when the first matches, so timing does not reveal which header was used.
    by_bearer = key_matches(expected, bearer.credentials if bearer else None)
    by_header = key_matches(expected, header)
    if by_bearer or by_header:
        return
    if bearer is not None or header is not None:
        message = "wrong API key"
    else:
        message = (
            "this endpoint needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key'"
        )
    raise ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
