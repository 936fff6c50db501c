"""User dicts in a form every MongoDB-wire server stores, and back.

A job document carries dicts keyed by user text: scorer params from ``meta.json``, a result's
per-class tables (keyed by class labels such as ``"1.5"`` or ``"cat.v2"``), error details, run
extras, event payloads in the outbox, webhook bodies. BSON field names cannot hold a NUL byte,
FerretDB refuses ``.`` and a leading ``$`` in them (MongoDB takes those only with caveats, never
in an update path), and FerretDB 1.x refuses an array directly inside an array. So every stored
value goes through :func:`storable` on the way in and :func:`restored` on the way out:

- in keys, ``%``, ``.``, ``$`` and NUL become ``%25``, ``%2E``, ``%24`` and ``%00``, and a lone
  UTF-16 surrogate (which UTF-8, hence BSON and JSON text, cannot hold; ``os.listdir`` gives
  one for a file name that is not UTF-8) becomes ``%uDCFF``; every other key, which includes
  every field name of the models, is stored as it is, so the fields the store queries keep
  their names and a document stays readable in a shell;
- an array inside an array becomes ``{"%A": [...]}``: no escaped key is ``%A`` (its ``%`` would
  be ``%25``), so the wrapper cannot be mistaken for a user dict written since;
- a NaN or infinite float becomes ``{"%F": "nan" | "inf" | "-inf"}`` (FerretDB closes the
  connection on a NaN and refuses an infinity, SQLite's JSON functions refuse both) and an
  integer beyond int64 becomes ``{"%I": "<decimal digits>"}`` (BSON has no wider integer:
  PyMongo raises ``OverflowError``), so every number a model accepts is stored exactly;
- a string holding a lone surrogate becomes ``{"%S": <the string escaped as a key is>}``.

The SQLite store writes the same form as JSON text (:func:`stored_json`, :func:`from_json`), so
both stores keep the same values; :func:`document` is a model's stored form.

Decoding undoes only those forms, so a document written before (docs/STORE.md) reads back as it
was unless one of its keys held ``%25``, ``%2E``, ``%24``, ``%00`` or ``%uD800`` to ``%uDFFF``
literally, or it held a dict that was exactly ``{"%A": [...]}`` (in an array), ``{"%F": "nan"}``,
``{"%I": "12"}`` or ``{"%S": "text"}``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pydantic_core
from bson.errors import BSONError
from pydantic import BaseModel

_ESCAPES = {"%": "%25", ".": "%2E", "$": "%24", "\x00": "%00"}
_UNESCAPES = {code: char for char, code in _ESCAPES.items()}
_ESCAPED = re.compile("[%.$\x00\ud800-\udfff]")
_CODE = re.compile("%(?:25|2E|24|00|uD[89A-F][0-9A-F]{2})")
_SURROGATE = re.compile("[\ud800-\udfff]")
ARRAY = "%A"
"""The one key of the dict an array inside an array is stored as."""
FLOAT = "%F"
"""The one key of the dict a NaN or infinite float is stored as (its ``repr``)."""
INT = "%I"
"""The one key of the dict an integer beyond int64 is stored as (its decimal digits)."""
TEXT = "%S"
"""The one key of the dict a string with a lone surrogate is stored as (escaped as a key)."""
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # compared, never `in range`: PyMongo's Int64 is
# an int subclass, for which `in range(...)` walks the range
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_DIGITS = re.compile(r"-?[0-9]+")
ENCODING_ERRORS = (BSONError, OverflowError, UnicodeEncodeError)
"""What encoding a document raises when a value escaped the forms above (none is known): the
stores turn it into ``STORE_ERROR``, never let it escape raw."""


def escape_key(key: str) -> str:
    """``key`` as a field name any MongoDB-wire server stores (identity for plain names)."""
    return _ESCAPED.sub(_escaped, key)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return _ESCAPES.get(char) or f"%u{ord(char):04X}"


def unescape_key(key: str) -> str:
    """The key :func:`escape_key` was given."""
    if "%" not in key:
        return key
    return _CODE.sub(_unescaped, key)


def _unescaped(match: re.Match[str]) -> str:
    code = match.group()
    return _UNESCAPES.get(code) or chr(int(code[2:], 16))


def document(model: BaseModel) -> Any:
    """The stored form of ``model``: its JSON form (as ``model_dump(mode="json")``) through
    :func:`storable`, which sees the values first (pydantic's JSON form turns NaN into ``null``
    and a key with a lone surrogate into U+FFFD, or fails on it)."""
    return pydantic_core.to_jsonable_python(storable(model.model_dump()))


def stored_json(model: BaseModel) -> str:
    """:func:`document` as JSON text (the SQLite store's ``doc`` column)."""
    return pydantic_core.to_json(storable(model.model_dump())).decode()


def from_json(text: str) -> Any:
    """The JSON value of :func:`stored_json`'s text, restored (a text without ``%`` has nothing
    to restore, so it is returned as parsed)."""
    value = pydantic_core.from_json(text)
    return restored(value) if "%" in text else value


def storable(value: Any) -> Any:
    """``value`` with every dict key escaped, every array in an array wrapped, every non-finite
    float and int beyond int64 tagged, at any depth (other values untouched)."""
    if isinstance(value, dict):
        return {_key(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):  # a model's tuple field is a JSON array too
        return [{ARRAY: storable(i)} if isinstance(i, list | tuple) else storable(i) for i in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {FLOAT: repr(value)}
    integer = isinstance(value, int) and not isinstance(value, bool)
    if integer and not _INT64_MIN <= value <= _INT64_MAX:
        return {INT: str(value)}
    if isinstance(value, str) and _SURROGATE.search(value):
        return {TEXT: escape_key(value)}
    return value


def _key(key: object) -> object:
    return escape_key(key) if isinstance(key, str) else key  # an int or enum key: as pydantic


def restored(value: Any) -> Any:
    """The value :func:`storable` was given."""
    if isinstance(value, dict):
        tagged = _tagged(value) if len(value) == 1 else None
        if tagged is not None:
            return tagged
        return {unescape_key(key): restored(item) for key, item in value.items()}
    if isinstance(value, list):
        return [restored(_unwrapped(item)) for item in value]
    return value


def _tagged(tagged: dict[str, Any]) -> float | int | str | None:
    """The value a one-key dict ``{"%F": "nan"}`` / ``{"%I": "123"}`` / ``{"%S": "a%uDCFF"}``
    stands for, else None."""
    text = tagged.get(TEXT)
    if isinstance(text, str):
        return unescape_key(text)
    text = tagged.get(FLOAT)
    if isinstance(text, str) and text in _FLOATS:
        return _FLOATS[text]
    text = tagged.get(INT)
    if isinstance(text, str) and _DIGITS.fullmatch(text):
        return int(text)
    return None


def _unwrapped(item: Any) -> Any:
    """An array's element: the array a ``{"%A": [...]}`` wrapper holds, else itself."""
    if isinstance(item, dict) and len(item) == 1 and isinstance(item.get(ARRAY), list):
        return item[ARRAY]
    return item
