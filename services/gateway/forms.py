"""The multipart form of an upload, read with bounds before anything is unpacked.

A form holds at most :data:`MAX_PARTS` parts: one ``archive`` file (at most
``gateway.max_upload_bytes``, saved to disk while its sha256 is taken) and the optional fields
``spec`` (JSON text, at most ``gateway.max_json_body_bytes``), ``priority`` and ``callback_url``
(small, UTF-8). Parts must not be encoded (no Content-Encoding or base64 transfer encoding: they
would be decoded without a bound). Anything else, a malformed body or a form without a boundary is
400 ``UPLOAD_REJECTED``, naming nothing longer than a few dozen characters of what was sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from services.gateway.bodies import parse_json
from services.gateway.http import api_error, shown
from shared.errors import AutoscorerError, ErrorCode

MAX_PARTS = 8
SMALL_FIELD = 4096
PLAIN_ENCODINGS = frozenset({"", "identity", "binary", "7bit", "8bit"})
MALFORMED = (ValueError, RuntimeError, AssertionError, LookupError, HttpProcessingError)


def _reject(message: str, **details: Any) -> AutoscorerError:
    return api_error(ErrorCode.UPLOAD_REJECTED, message, **details)


@dataclass
class Form:
    fields: dict[str, Any] = field(default_factory=dict)
    archive: Path | None = None
    archive_sha256: str = ""

    def digest(self) -> str:
        """What identifies this submission: the archive's bytes and the fields."""
        fields = sorted((k, repr(v)) for k, v in self.fields.items())
        return hashlib.sha256(f"{self.archive_sha256}|{fields}".encode()).hexdigest()


async def _read_limited(part: BodyPartReader, limit: int, name: str) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(min(limit + 1, 1 << 16)):
        data.extend(chunk)
        if len(data) > limit:
            raise _reject(f"form field {name!r} is larger than {limit} bytes")
    return bytes(data)


async def _save(part: BodyPartReader, target: Path, limit: int) -> str:
    size, digest = 0, hashlib.sha256()
    with target.open("wb") as out:
        while chunk := await part.read_chunk(1 << 20):
            size += len(chunk)
            if size > limit:
                raise _reject(f"upload is larger than {limit} bytes", limit=limit)
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _check_encoding(part: BodyPartReader) -> None:
    for header in (hdrs.CONTENT_ENCODING, hdrs.CONTENT_TRANSFER_ENCODING):
        if part.headers.get(header, "").strip().lower() not in PLAIN_ENCODINGS:
            raise _reject(f"form parts must not be encoded ({header})")


async def _field(part: BodyPartReader, name: str, json_limit: int) -> Any:
    if name == "spec":
        return parse_json(await _read_limited(part, json_limit, name), "the 'spec' field")
    data = await _read_limited(part, SMALL_FIELD, name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _reject(f"form field {name!r} is not UTF-8") from exc


async def _read_parts(
    reader: MultipartReader, folder: Path, upload_limit: int, json_limit: int
) -> Form:
    form = Form()
    for _ in range(MAX_PARTS + 1):
        part = await reader.next()
        if part is None:
            return form
        if not isinstance(part, BodyPartReader):
            raise _reject("nested multipart is not accepted")
        _check_encoding(part)
        name = part.name or ""
        if name == "archive" and form.archive is None:
            form.archive = folder / "upload"
            form.archive_sha256 = await _save(part, form.archive, upload_limit)
        elif name in ("spec", "priority", "callback_url") and name not in form.fields:
            form.fields[name] = await _field(part, name, json_limit)
        elif name == "archive" or name in form.fields:
            raise _reject(f"form field {name!r} is given twice")
        else:
            raise _reject(f"unexpected form field {shown(name)}", field=shown(name))
    raise _reject(f"the form has more than {MAX_PARTS} parts")


async def read_form(request: web.Request, folder: Path, upload_limit: int, json_limit: int) -> Form:
    """The form's fields, and its archive saved under ``folder``."""
    try:
        reader = await request.multipart()
        form = await _read_parts(reader, folder, upload_limit, json_limit)
    except MALFORMED as exc:
        raise _reject("the multipart body is malformed", reason=type(exc).__name__) from exc
    if form.archive is None:
        raise _reject("the form has no 'archive' file")
    return form
