"""JSON from untrusted text with a bound on nesting, checked before parsing.

``json.loads`` recurses once per level and raises ``RecursionError`` (an exception nobody
expects, turned into a 500 or a traceback) on a document nested a few thousand levels deep.
:func:`loads_bounded` scans the brackets first, without recursion, and refuses anything deeper
than ``max_depth`` with :class:`JsonTooDeep` (a ``ValueError``).
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_DEPTH = 64
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


class JsonTooDeep(ValueError):
    """The document nests deeper than allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"JSON nests deeper than {limit} levels")
        self.limit = limit


def depth_exceeds(text: str, limit: int) -> bool:
    """True when arrays/objects in ``text`` nest deeper than ``limit`` (brackets inside strings
    are skipped; the text need not be valid JSON)."""
    if text.count("[") + text.count("{") <= limit:  # C-speed shortcut for the common case
        return False
    depth = 0
    for token in _TOKENS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def loads_bounded(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that raises ``JsonTooDeep`` or ``json.JSONDecodeError``, nothing else."""
    if depth_exceeds(text, max_depth):
        raise JsonTooDeep(max_depth)
    try:
        return json.loads(text)
    except RecursionError as exc:  # a recursion limit set below max_depth: still refused
        raise JsonTooDeep(max_depth) from exc
