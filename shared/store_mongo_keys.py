"""User dicts in a form every MongoDB-wire server stores, and back.

A job document carries dicts keyed by user text: scorer params from ``meta.json``, a result's
per-class tables (keyed by class labels such as ``"1.5"`` or ``"cat.v2"``), error details, run
extras, event payloads in the outbox, webhook bodies. BSON field names cannot hold a NUL byte,
FerretDB refuses ``.`` and a leading ``$`` in them (MongoDB takes those only with caveats, never
in an update path), and FerretDB 1.x refuses an array directly inside an array. So every stored
value goes through :func:`storable` on the way in and :func:`restored` on the way out:

- in keys, ``%``, ``.``, ``$`` and NUL become ``%25``, ``%2E``, ``%24`` and ``%00``; every other
  key, which includes every field name of the models, is stored as it is, so the fields the
  store queries keep their names and a document stays readable in a shell;
- an array inside an array becomes ``{"%A": [...]}``: no escaped key is ``%A`` (its ``%`` would
  be ``%25``), so the wrapper cannot be mistaken for a user dict written since.

Decoding undoes only those forms, so a document written before (docs/STORE.md) reads back as it
was unless one of its keys held ``%25``, ``%2E``, ``%24`` or ``%00`` literally, or one of its
arrays held a dict that was exactly ``{"%A": [...]}``.
"""

from __future__ import annotations

import re
from typing import Any

_ESCAPES = {"%": "%25", ".": "%2E", "$": "%24", "\x00": "%00"}
_UNESCAPES = {code: char for char, code in _ESCAPES.items()}
_ESCAPED = re.compile("[%.$\x00]")
_CODE = re.compile("%(?:25|2E|24|00)")
ARRAY = "%A"
"""The one key of the dict an array inside an array is stored as."""


def escape_key(key: str) -> str:
    """``key`` as a field name any MongoDB-wire server stores (identity for plain names)."""
    return _ESCAPED.sub(lambda m: _ESCAPES[m.group()], key)


def unescape_key(key: str) -> str:
    """The key :func:`escape_key` was given."""
    if "%" not in key:
        return key
    return _CODE.sub(lambda m: _UNESCAPES[m.group()], key)


def storable(value: Any) -> Any:
    """``value`` with every dict key escaped and every array in an array wrapped, at any depth
    (other values untouched)."""
    if isinstance(value, dict):
        stored: dict[str, Any] = {}
        for key, item in value.items():
            stored[escape_key(key)] = storable(item)
        return stored
    if isinstance(value, list):
        return [{ARRAY: storable(i)} if isinstance(i, list) else storable(i) for i in value]
    return value


def restored(value: Any) -> Any:
    """The value :func:`storable` was given."""
    if isinstance(value, dict):
        plain: dict[str, Any] = {}
        for key, item in value.items():
            plain[unescape_key(key)] = restored(item)
        return plain
    if isinstance(value, list):
        return [restored(_unwrapped(item)) for item in value]
    return value


def _unwrapped(item: Any) -> Any:
    """An array's element: the array a ``{"%A": [...]}`` wrapper holds, else itself."""
    if isinstance(item, dict) and len(item) == 1 and isinstance(item.get(ARRAY), list):
        return item[ARRAY]
    return item
