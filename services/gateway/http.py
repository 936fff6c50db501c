"""The API's response envelope (design notes) and the one middleware that turns errors into it.

Whatever goes wrong, the client gets the envelope with a 4xx or 503, never a traceback or an
exception's text: messages and details are bounded (they may quote a client's input) and an
unexpected exception becomes ``INTERNAL_ERROR`` naming only its type, with the traceback in the log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from shared.errors import AutoscorerError, ErrorCode, Fault, Stage

log = logging.getLogger(__name__)

_STATUS: dict[ErrorCode, int] = {
    ErrorCode.AUTH_REQUIRED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.SCORER_NOT_FOUND: 404,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.UPLOAD_REJECTED: 400,
    ErrorCode.RESOURCE_LIMIT_EXCEEDED: 422,  # a well-formed spec asking beyond the operator's caps
    ErrorCode.INTERNAL_ERROR: 500,
}
MAX_MESSAGE = 500  # characters of an error message
MAX_DETAILS = 8192  # bytes of an error's details, as JSON
MAX_SHOWN = 80  # characters of a client's value quoted in a message

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpError(AutoscorerError):
    """An error whose HTTP status is not the one its code implies (405, 413, 415, 422)."""

    def __init__(self, status: int, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(
            code, message, stage=Stage.VALIDATION, details=details, fault=Fault.PARTICIPANT
        )
        self.status = status


def http_status(error: AutoscorerError) -> int:
    if isinstance(error, HttpError):
        return error.status
    if error.code in _STATUS:
        return _STATUS[error.code]
    if error.fault is Fault.PLATFORM:
        return 503 if error.retryable else 500
    return 400  # the request (or what it names) is wrong, whoever's fault the content is


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """A client's value, quoted and cut short, for a message."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    cut = repr(text[:limit])
    return cut + "…" if len(text) > limit else cut


def _meta() -> dict[str, Any]:
    return {"timestamp": datetime.now(UTC).isoformat(), "version": version("autoscorer")}


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response({"ok": True, "data": data, "meta": _meta()}, status=status)


def _bounded(info: dict[str, Any]) -> dict[str, Any]:
    if len(info["message"]) > MAX_MESSAGE:
        info["message"] = info["message"][:MAX_MESSAGE] + "…"
    if len(json.dumps(info["details"], default=str)) > MAX_DETAILS:
        info["details"] = {"truncated": True}
    return info


def error_response(error: AutoscorerError) -> web.Response:
    info = _bounded(error.to_info().model_dump(mode="json"))
    body = {"ok": False, "error": info, "meta": _meta()}
    return web.json_response(body, status=http_status(error))


def api_error(code: ErrorCode, message: str, **details: Any) -> AutoscorerError:
    """A request the API refuses: the caller's fault (docs/ERRORS.md), never retryable."""
    return AutoscorerError(
        code, message, stage=Stage.VALIDATION, details=details, fault=Fault.PARTICIPANT
    )


def _from_http(exc: web.HTTPException) -> web.Response:
    code = {
        404: ErrorCode.NOT_FOUND,
        405: ErrorCode.NOT_FOUND,
        413: ErrorCode.UPLOAD_REJECTED,
    }.get(exc.status, ErrorCode.CONFIG_VALIDATION_ERROR)
    message = f"{exc.status} {exc.reason}"
    if exc.status == 413:
        message = "the request body is larger than this route accepts"
    response = error_response(HttpError(exc.status, code, message))
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


class BoundedAccessLogger(AbstractAccessLogger):
    """One access-log line per request that quotes at most a few hundred characters of what the
    client sent (aiohttp's default line quotes the whole request line and User-Agent)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %d %.3fs",
            request.remote,
            request.method[:16],
            request.path[:200],
            response.status,
            response.body_length,
            time,
        )


def _unexpected(request: web.Request, exc: Exception) -> web.Response:
    log.error(
        "unhandled %s on %s %s",
        type(exc).__name__,
        request.method,
        request.path[:200],
        exc_info=exc,
    )
    error = AutoscorerError(
        ErrorCode.INTERNAL_ERROR,
        "unexpected error; the gateway's log has the details",
        stage=Stage.PLATFORM,
        details={"exception": type(exc).__name__},
    )
    return error_response(error)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AutoscorerError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http(exc)
    except (HttpProcessingError, RequestPayloadError) as exc:  # bad chunking, corrupt gzip body
        error = HttpError(400, ErrorCode.PARSE_ERROR, "the request body cannot be read")
        log.info("unreadable body on %s %s: %s", request.method, request.path[:200], type(exc))
        return error_response(error)
    except Exception as exc:  # noqa: BLE001  # the gateway's one boundary
        return _unexpected(request, exc)
