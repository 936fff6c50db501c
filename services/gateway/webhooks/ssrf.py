"""An SSRF guard applied when connecting, not when a URL is accepted.

Host names are resolved by :class:`GuardedResolver`, which refuses every address that is not
global unless an allow-list entry (host name or CIDR) covers it. The addresses it returns are the
ones aiohttp connects to, so a DNS answer that changes between checks cannot slip past.
IP-literal URLs skip resolvers in aiohttp, so :func:`check_literal` covers them.

An IPv6 address can carry an IPv4 one that a gateway or tunnel on the way turns back into IPv4:
IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96`` and the
local-use ``64:ff9b:1::/48``, 6to4 ``2002::/16`` (bits 16-47) and Teredo ``2001::/32`` (server
bits 32-63, client the bitwise NOT of the last 32 bits). Each embedded IPv4 must be allowed as
well, so ``[64:ff9b::a9fe:a9fe]`` is the metadata service and is refused.
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


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215; not global (IANA)
SIXTOFOUR = ipaddress.IPv6Network("2002::/16")
TEREDO = ipaddress.IPv6Network("2001::/32")
NOT_GLOBAL_V6 = (NAT64_LOCAL,)  # IANA says not global; this Python's table may not know it
_LOW32 = 0xFFFFFFFF


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address ``ip`` carries, by the forms a translator or tunnel would unpack."""
    if isinstance(ip, ipaddress.IPv4Address):
        return []
    value = int(ip)
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if value >> 32 == 0 and value > 1:  # IPv4-compatible ::a.b.c.d (not :: or ::1)
        found.append(ipaddress.IPv4Address(value & _LOW32))
    if ip in NAT64 or ip in NAT64_LOCAL:
        found.append(ipaddress.IPv4Address(value & _LOW32))
    if ip in NAT64_LOCAL:  # RFC 6052 for a /48 prefix: bits 48-63 and 72-87 (u octet between)
        high, low = (value >> 64) & 0xFFFF, (value >> 40) & 0xFFFF
        found.append(ipaddress.IPv4Address(high << 16 | low))
    if ip in SIXTOFOUR:
        found.append(ipaddress.IPv4Address((value >> 80) & _LOW32))
    if ip in TEREDO:
        found.append(ipaddress.IPv4Address((value >> 64) & _LOW32))  # server
        found.append(ipaddress.IPv4Address(~value & _LOW32))  # client, obfuscated
    return found


def _public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in NOT_GLOBAL_V6):
        return False
    return ip.is_global and not ip.is_multicast


class Policy:
    def __init__(self, allow: Sequence[str]) -> None:
        self._nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._hosts: set[str] = set()
        for entry in allow:
            try:
                self._nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._hosts.add(entry.lower())

    def permits(self, host: str, address: str) -> bool:
        """``address`` (``host`` resolved) is global, with every IPv4 it embeds, or allowed."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if host.lower() in self._hosts or self._allowed(ip):
            return True
        return _public(ip) and all(_public(v4) or self._allowed(v4) for v4 in embedded_ipv4(ip))

    def _allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self._nets)


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
