"""An SSRF guard applied when connecting, not when a URL is accepted.

Host names are resolved by :class:`GuardedResolver`, which refuses every address that is not
global unless an allow-list entry (host name or CIDR) covers it. The addresses it returns are the
ones aiohttp connects to, so a DNS answer that changes between checks cannot slip past.
IP-literal URLs skip resolvers in aiohttp, so :func:`check_literal` covers them.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver


class BlockedAddressError(OSError):
    """The target resolves to an address webhooks may not reach."""


class Policy:
    def __init__(self, allow: Sequence[str]) -> None:
        self._nets = []
        self._hosts = set()
        for entry in allow:
            try:
                self._nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._hosts.add(entry.lower())

    def permits(self, host: str, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if ip.is_global and not ip.is_multicast:
            return True
        return host.lower() in self._hosts or any(ip in net for net in self._nets)


def check_literal(policy: Policy, host: str) -> None:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return  # a name: the resolver checks it
    if not policy.permits(host, host.strip("[]")):
        raise BlockedAddressError(f"webhook target {host} is not a global address")


class GuardedResolver(AbstractResolver):
    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if self._policy.permits(host, r["host"])]
        if not allowed:
            blocked = ", ".join(sorted({r["host"] for r in results}))
            raise BlockedAddressError(f"webhook target {host} resolves to non-global {blocked}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def resolver_kwargs(policy: Policy) -> dict[str, Any]:
    return {"resolver": GuardedResolver(policy)}
