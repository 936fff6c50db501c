"""API keys with roles: a submitter sees only its own jobs; an admin sees everything."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from services.gateway.http import Handler, api_error
from shared.config import GatewaySettings
from shared.errors import ErrorCode

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


PRINCIPAL = web.RequestKey("principal", Principal)
ANONYMOUS_ADMIN = Principal("anonymous", "admin")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class KeyRing:
    """Looks keys up by digest with a constant-time comparison over every known key."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._keys = [
            (_digest(k.key.get_secret_value()), Principal(k.subject, k.role))
            for k in settings.api_keys
        ]
        self._open = settings.insecure_no_auth

    def lookup(self, token: str | None) -> Principal | None:
        if token is None:
            return ANONYMOUS_ADMIN if self._open else None
        if not token:
            return None
        wanted = _digest(token)
        found: Principal | None = None
        for digest, principal in self._keys:
            if hmac.compare_digest(digest, wanted):
                found = principal
        return found


MAX_TOKEN = 512


def _sane(token: str | None) -> str | None:
    """``None`` when no key was sent; the token when it could be a key (printable ASCII,
    bounded); else ``""``, which matches no key: non-UTF-8 bytes (they arrive as surrogates),
    control characters or an over-long header are a plain 401, never an encoding error."""
    if not token:
        return None
    if len(token) > MAX_TOKEN or not (token.isascii() and token.isprintable()):
        return ""
    return token


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return _sane(header[7:].strip()) or ""
    return _sane(request.headers.get("X-API-Key"))


def auth_middleware(keys: KeyRing) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        principal = keys.lookup(_token(request))
        if principal is None:
            raise api_error(
                ErrorCode.AUTH_REQUIRED, "send a valid API key: Authorization: Bearer KEY"
            )
        request[PRINCIPAL] = principal
        return await handler(request)

    return middleware


def require_admin(request: web.Request) -> Principal:
    principal = request[PRINCIPAL]
    if not principal.is_admin:
        raise api_error(ErrorCode.FORBIDDEN, "this needs an admin API key")
    return principal
