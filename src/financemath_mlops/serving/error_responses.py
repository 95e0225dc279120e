"""One error shape for every 4xx and 5xx: ``{"error": {"code", "message", "details"}}``.

Clients branch on ``code``; people read ``message``. Validation details name the field and the
rule but never echo the input back (it may be large or sensitive), and list at most
``serving.max_error_details`` problems and then a count, so a 1 MB body of a million wrong items
gets a small answer, not a 70 MB one. Nothing here ever puts a stack trace in a response:
unexpected exceptions become a generic 500 and a logged traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
    503: "model_unavailable",
}


class ApiError(Exception):
    """An expected failure with a status, a stable code and a message for people."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_payload(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_payload(code, message, details), status_code=status, headers=headers)


DEFAULT_MAX_DETAILS = 20


def capped_details(details: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` problems, then one entry that counts the rest."""
    if len(details) <= limit:
        return details
    return [*details[:limit], _more(len(details) - limit)]


def _more(count: int) -> dict[str, Any]:
    return {"loc": [], "msg": f"... and {count} more problems", "type": "more", "count": count}


def max_details(request: Request) -> int:
    """serving.max_error_details of the running service (the default outside one)."""
    serving = getattr(getattr(request.app.state, "service", None), "serving", None)
    return getattr(serving, "max_error_details", DEFAULT_MAX_DETAILS)


def validation_details(errors: Any, limit: int | None = None) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors reduced to where, what and which rule (no input echo, no URLs).

    With ``limit``, only the first ``limit`` errors are reduced and the rest are counted.
    """
    errors = list(errors)
    shown = errors if limit is None else errors[:limit]
    details = [
        {
            "loc": [part if isinstance(part, int) else str(part) for part in err.get("loc", ())],
            "msg": str(err.get("msg", "invalid value")),
            "type": str(err.get("type", "value_error")),
        }
        for err in shown
    ]
    if len(errors) > len(shown):
        details.append(_more(len(errors) - len(shown)))
    return details


def summarize(details: list[dict[str, Any]]) -> str:
    listed = [d for d in details if d.get("type") != "more"]
    counted = sum(d.get("count", 0) for d in details if d.get("type") == "more")
    shown = [f"{'.'.join(str(p) for p in d['loc']) or 'body'}: {d['msg']}" for d in listed[:3]]
    hidden = len(listed) - len(shown) + counted
    more = f" (and {hidden} more)" if hidden else ""
    return "invalid request: " + "; ".join(shown) + more


def _respond(request: Request, error: ApiError) -> JSONResponse:
    """Every handler's answer: the error as JSON, its code noted for the metrics middleware."""
    request.state.error_code = error.code  # read by the metrics middleware (errors by type)
    return error_response(error.status, error.code, error.message, error.details, error.headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _respond(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    details = validation_details(errors, max_details(request))
    for err in errors[:1]:  # a JSON syntax error is the only error FastAPI reports
        if err.get("type") == "json_invalid":
            reason = str((err.get("ctx") or {}).get("error", "JSON decode error"))
            position = err.get("loc", ("body", "?"))[-1]
            message = f"the request body is not valid JSON: {reason} at character {position}"
            return _respond(request, ApiError(400, "invalid_json", message, details))
    return _respond(request, ApiError(422, "validation_error", summarize(details), details))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _STATUS_CODES.get(status, "bad_request" if status < 500 else "internal_error")
    if status == 404:
        message = f"no such endpoint: {request.url.path[:200]}; see /docs for the API"
    elif status == 405:
        message = f"{request.method[:20]} is not allowed on {request.url.path[:200]}"
    elif status >= 500:
        message = "internal error"
    else:
        message = str(exc.detail)
    return _respond(request, ApiError(status, code, message, headers=getattr(exc, "headers", None)))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = getattr(request.state, "request_id", "-")
    log.error("unhandled error in request %s", request_id, exc_info=exc)
    message = f"internal error; quote request id {request_id} when reporting it"
    return _respond(request, ApiError(500, "internal_error", message))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
