"""Request bodies, parsed once at the edge with bounds (CONVENTIONS item 11).

Every non-multipart body of a POST, PUT, PATCH or DELETE is JSON: at most
``gateway.max_json_body_bytes`` (413), ``application/json`` in UTF-8 (415 otherwise), valid UTF-8
without lone surrogates, no ``NaN``/``Infinity``, nested at most :data:`MAX_JSON_DEPTH` levels
(400 ``PARSE_ERROR``). :func:`body_middleware` checks it before any handler runs, so a handler that
calls ``request.json()`` itself only ever sees a sane document; :func:`json_body` hands out the
parsed value and :func:`model_body` validates it into a model.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from services.gateway.http import Handler, HttpError, api_error
from shared.errors import AutoscorerError, ErrorCode

MAX_JSON_DEPTH = 32
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_TYPES = frozenset({"application/json", "application/octet-stream"})  # the latter: no type
CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
JSON_BODY = web.RequestKey("json_body", object)
_ABSENT = object()

M = TypeVar("M", bound=BaseModel)


def _parse_error(message: str, **details: Any) -> AutoscorerError:
    return HttpError(400, ErrorCode.PARSE_ERROR, message, **details)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_tree(value: Any, max_depth: int) -> None:
    """Depth and string sanity of a parsed document, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")  # a lone surrogate (\\ud800) raises UnicodeEncodeError
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise _parse_error(f"the JSON nests deeper than {max_depth} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def parse_json(data: bytes, what: str = "the request body", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Bytes to a JSON value, or a 400 ``PARSE_ERROR`` that quotes nothing of the input."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _parse_error(f"{what} is not UTF-8", position=exc.start) from exc
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise _parse_error(
            f"{what} is not JSON: {exc.msg}", line=exc.lineno, column=exc.colno
        ) from exc
    except RecursionError as exc:
        raise _parse_error(f"the JSON nests deeper than {max_depth} levels") from exc
    except ValueError as exc:  # NaN / Infinity, or an integer longer than Python parses
        raise _parse_error(f"{what} is not strict JSON (NaN, Infinity or a huge number)") from exc
    try:
        _check_tree(value, max_depth)
    except UnicodeEncodeError as exc:
        raise _parse_error(f"{what} holds a lone UTF-16 surrogate") from exc
    return value


async def _read_json(request: web.Request) -> Any:
    if request.content_type not in JSON_TYPES and not request.content_type.endswith("+json"):
        raise HttpError(
            415,
            ErrorCode.PARSE_ERROR,
            "send the body as application/json (or multipart/form-data to upload a workspace)",
        )
    charset = (request.charset or "utf-8").lower()
    if charset not in CHARSETS:
        raise HttpError(415, ErrorCode.PARSE_ERROR, "the body's charset must be UTF-8")
    return parse_json(await request.read())  # over client_max_size: 413


@web.middleware
async def body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (
        request.method in BODY_METHODS
        and request.body_exists
        and not request.content_type.startswith("multipart/")
    ):
        request[JSON_BODY] = await _read_json(request)
    return await handler(request)


def json_body(request: web.Request) -> Any:
    """The request's parsed JSON body; 400 when there is none."""
    value = request.get(JSON_BODY, _ABSENT)
    if value is _ABSENT:
        raise _parse_error("this route needs a JSON body (Content-Type: application/json)")
    return value


def validation_error(exc: ValidationError, what: str) -> AutoscorerError:
    """A model's validation errors, without the input they were about."""
    return api_error(
        ErrorCode.CONFIG_VALIDATION_ERROR,
        f"{what} is invalid",
        errors=exc.errors(include_url=False, include_context=False, include_input=False)[:20],
    )


def validate(model: type[M], value: Any, what: str) -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise validation_error(exc, what) from exc


def model_body(request: web.Request, model: type[M], what: str = "the request body") -> M:
    return validate(model, json_body(request), what)
