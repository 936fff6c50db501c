"""The one check for a URL the platform will later call (webhook subscriptions, a job's
``callback_url``), applied when the URL is accepted, so a URL that cannot be parsed never reaches
a background loop.

A target URL is ``http`` or ``https``, has a host (a DNS name that IDNA can encode, a dotted-quad
IPv4 or a bracketed IPv6 without zone), an optional port in 1-65535, no user info, no whitespace,
control characters or backslashes, and at most :data:`MAX_URL_LENGTH` characters. Whether the
host may be reached (the SSRF guard) is decided when connecting, not here: DNS answers change.
"""

from __future__ import annotations

import ipaddress
import re
from contextlib import suppress
from typing import Annotated

import idna
from pydantic import AfterValidator, Field
from yarl import URL

from shared.errors import AutoscorerError, ErrorCode, Stage

MAX_URL_LENGTH = 2048
SCHEMES = frozenset({"http", "https"})
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC_TLD = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def _refuse(reason: str) -> AutoscorerError:
    return AutoscorerError(
        ErrorCode.CONFIG_VALIDATION_ERROR,
        f"invalid target URL: {reason}",
        stage=Stage.VALIDATION,
    )


def _check_host(host: str) -> None:
    if host.startswith("["):
        literal = host[1:-1] if host.endswith("]") else ""
        if "%" in literal:
            raise _refuse("IPv6 zone ids are not allowed")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise _refuse("the IPv6 host is not a valid address") from None
        return
    with suppress(ValueError):
        ipaddress.IPv4Address(host)
        return
    name = host[:-1] if host.endswith(".") else host
    try:
        encoded = idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        raise _refuse("the host name cannot be IDNA-encoded") from None
    if not encoded or len(encoded) > 253:
        raise _refuse("the host name is empty or longer than 253 characters")
    labels = encoded.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise _refuse("the host name has an invalid label")
    if _NUMERIC_TLD.match(labels[-1]):
        # 127.1, 2130706433, 0x7f.0.0.1: resolvers read these as IPv4 in ways parsers disagree on
        raise _refuse("a numeric host must be a dotted-quad IPv4 address")


def check_target_url(url: object) -> str:
    """``url`` if the platform may accept it as a target it will call later; otherwise a
    ``CONFIG_VALIDATION_ERROR`` that names the rule (never echoing the URL)."""
    if not isinstance(url, str):
        raise _refuse("not a string")
    if not url or len(url) > MAX_URL_LENGTH:
        raise _refuse(f"empty or longer than {MAX_URL_LENGTH} characters")
    if _FORBIDDEN.search(url):
        raise _refuse("whitespace, control characters and backslashes are not allowed")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise _refuse("the scheme must be http or https")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        raise _refuse("user info (user:password@) is not allowed")
    host, port = _split_authority(authority)
    if not host:
        raise _refuse("it has no host")
    if "%" in host:
        raise _refuse("percent-encoding and zone ids are not allowed in the host")
    if port is not None and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise _refuse("the port must be a number in 1-65535")
    _check_host(host if host.startswith("[") else host.lower())
    try:  # aiohttp parses with yarl when it connects: it must agree the URL is valid
        parsed = URL(url)
        yarl_host, yarl_user = parsed.raw_host, parsed.user
    except (ValueError, TypeError, UnicodeError):
        raise _refuse("it cannot be parsed") from None
    if not yarl_host or yarl_user is not None:
        raise _refuse("it cannot be parsed")
    return url


def _split_authority(authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise _refuse("the IPv6 host is not closed with ']'")
        host, tail = authority[: end + 1], authority[end + 1 :]
        if tail and not tail.startswith(":"):
            raise _refuse("only a port may follow the IPv6 host")
        return host, tail[1:] if tail else None
    if authority.count(":") > 1 or "[" in authority or "]" in authority:
        raise _refuse("an IPv6 host must be in brackets")
    host, sep, port = authority.partition(":")
    return host, port if sep else None


def _validate(url: str) -> str:
    try:
        return check_target_url(url)
    except AutoscorerError as exc:
        raise ValueError(exc.message) from None


TargetUrl = Annotated[
    str,
    Field(pattern=r"^https?://\S+$", max_length=MAX_URL_LENGTH),
    AfterValidator(_validate),
]
"""A field type for a URL the platform will call: the pattern, then :func:`check_target_url`."""
