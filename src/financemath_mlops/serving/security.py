"""The API key of the prediction and admin endpoints, and who may be served without one.

When ``serving.api_key`` is set, callers send it as ``Authorization: Bearer <key>`` or
``X-API-Key: <key>``. Keys are compared in constant time (``hmac.compare_digest``) and never
logged or echoed, the access log included (:class:`RedactQueryString`: a key sent as
``?api_key=...`` is refused, and must not be written in clear either). Liveness, readiness and
metrics stay open so probes and Prometheus need no secret.

Without a key, :func:`check_bind` (the entry point, which knows the address) refuses an address
beyond loopback unless ``serving.allow_anonymous`` asks for it; :func:`report_missing_key` (the
app, under any server) warns once per process when nobody asked for anonymous access.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from financemath_mlops.config import ServingSettings
from financemath_mlops.errors import StageError
from financemath_mlops.serving.error_responses import ApiError

log = logging.getLogger(__name__)

# Set by `python -m financemath_mlops.serving` for the app it runs (and its worker processes):
# the bind address was checked and the missing key reported there, so the app does not warn a
# second time. Not a setting, hence not FMOPS_ (config refuses unknown FMOPS_* variables).
BIND_CHECKED_ENV = "FINANCEMATH_SERVING_BIND_CHECKED"
KEY_ENDPOINTS = "/predict, /predict/batch and /model"

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


# What FastAPI writes for an operation that depends on :func:`require_api_key`: either scheme.
KEY_SECURITY = [{scheme.scheme_name: []} for scheme in (bearer_scheme, header_scheme)]


async def check_api_key(request: Request) -> None:
    """:func:`require_api_key` as a dependency without sub-dependencies: the prediction endpoints
    use it, since FastAPI solved the two schemes' sub-dependencies anew on every request (a sixth
    of the event loop's time per /predict). Solved before the body is validated, as before: a
    caller without the key gets 401, never a validation answer. Their operations declare
    :data:`KEY_SECURITY`, so the published schema is unchanged."""
    if configured_key(request) is None:
        return
    await require_api_key(request, await bearer_scheme(request), await header_scheme(request))


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` only: what no other machine can reach.

    Anything else is beyond loopback: 0.0.0.0 and ``::`` (every interface), an interface's
    address, any other host name (it may resolve anywhere) and an empty host.
    """
    name = host.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(serving: ServingSettings, host: str) -> None:
    """Refuse to listen on ``host`` beyond loopback without a key unless anonymous access was
    asked for (``serving.allow_anonymous``); say at INFO when the service runs without one.

    The address judged is the one clients reach: ``serving.published_address`` when set (a
    container listens on 0.0.0.0 behind a port compose publishes on 127.0.0.1), else ``host``.
    """
    if serving.api_key is not None:
        return
    reached = serving.published_address or host
    where = host if reached == host else f"{host}, published on {reached}"
    if is_loopback(reached):
        log.info(
            "serving on %s without an API key (loopback: only this machine can connect); set "
            "FMOPS_SERVING__API_KEY to require one on %s",
            where,
            KEY_ENDPOINTS,
        )
    elif serving.allow_anonymous:
        log.info(
            "serving on %s without an API key: anonymous access was asked for "
            "(serving.allow_anonymous); anyone who reaches the port may call %s",
            where,
            KEY_ENDPOINTS,
        )
    else:
        shown = where if reached else "(every interface)"
        raise StageError(
            f"refusing to serve on {shown} without an API key: it is "
            "beyond loopback, so anyone who reaches the port could predict. Set "
            "FMOPS_SERVING__API_KEY (serving.api_key), or FMOPS_SERVING__ALLOW_ANONYMOUS=true "
            "(serving.allow_anonymous) if anonymous access is intended, or listen on "
            "--host 127.0.0.1"
        )


def report_missing_key(serving: ServingSettings) -> None:
    """The app's own word when it runs without a key: it cannot know the bind address (plain
    ``uvicorn ...app:app``), so it warns unless anonymous access was asked for, and says nothing
    when the entry point has already checked the address and said so."""
    if serving.api_key is not None or os.environ.get(BIND_CHECKED_ENV):
        return
    if serving.allow_anonymous:
        log.info(
            "no API key: anonymous access was asked for (serving.allow_anonymous); %s answer "
            "anyone who reaches this service",
            KEY_ENDPOINTS,
        )
    else:
        log.warning(
            "no API key set: %s answer anyone who reaches this service. Set "
            "FMOPS_SERVING__API_KEY, or FMOPS_SERVING__ALLOW_ANONYMOUS=true if that is intended "
            "(`python -m financemath_mlops.serving` refuses an address beyond loopback without "
            "either)",
            KEY_ENDPOINTS,
        )


class RedactQueryString(logging.Filter):
    """uvicorn's access log line with the query string replaced by ``?[redacted]``.

    The key belongs in a header; a client that sends it as ``?api_key=...`` gets a 401, and its
    key must not then sit in clear in the access log. No endpoint reads a query parameter, so
    nothing useful is lost. uvicorn logs ``'%s - "%s %s HTTP/%s" %d'`` with the path (and query)
    as the third argument.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, mark, _ = args[2].partition("?")
            if mark:
                record.args = (*args[:2], f"{path}?[redacted]", *args[3:])
        return True


def redact_access_log() -> None:
    """Install :class:`RedactQueryString` on uvicorn's access logger (once per process)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueryString) for f in access.filters):
        access.addFilter(RedactQueryString())
