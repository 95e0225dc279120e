"""One error shape for every 4xx and 5xx: ``{"error": {"code", "message", "details"}}``.

Clients branch on ``code``; people read ``message``. Validation details name the field and the
rule but never echo the input back (it may be large or sensitive), and nothing here ever puts a
stack trace in a response: unexpected exceptions become a generic 500 and a logged traceback.
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


def validation_details(errors: Any) -> list[dict[str, Any]]:
    """Pydantic/FastAPI errors reduced to where, what and which rule (no input echo, no URLs)."""
    details = []
    for err in errors:
        details.append(
            {
                "loc": [
                    part if isinstance(part, int) else str(part) for part in err.get("loc", ())
                ],
                "msg": str(err.get("msg", "invalid value")),
                "type": str(err.get("type", "value_error")),
            }
        )
    return details


def summarize(details: list[dict[str, Any]]) -> str:
    shown = [f"{'.'.join(str(p) for p in d['loc']) or 'body'}: {d['msg']}" for d in details[:3]]
    more = f" (and {len(details) - 3} more)" if len(details) > 3 else ""
    return "invalid request: " + "; ".join(shown) + more


def _respond(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request.state.error_code = code  # read by the metrics middleware (errors by type)
    return error_response(status, code, message, details, headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _respond(request, exc.status, exc.code, exc.message, exc.details, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors())
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            reason = str((err.get("ctx") or {}).get("error", "JSON decode error"))
            position = err.get("loc", ("body", "?"))[-1]
            message = f"the request body is not valid JSON: {reason} at character {position}"
            return _respond(request, 400, "invalid_json", message, details)
    return _respond(request, 422, "validation_error", summarize(details), details)


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
    return _respond(request, status, code, message, headers=getattr(exc, "headers", None))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = getattr(request.state, "request_id", "-")
    log.error("unhandled error in request %s", request_id, exc_info=exc)
    message = f"internal error; quote request id {request_id} when reporting it"
    return _respond(request, 500, "internal_error", message)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
