"""Class 10 of issue 7 for webhooks: the SSRF guard judges IPv4 embedded in IPv6 (properties over
every form), target URLs are checked when accepted (properties: any string is either accepted and
parseable by what connects, or refused with the standard error, nothing else), and the SQLite
store keeps its secrets in files only the service user can read."""

from __future__ import annotations

import ipaddress
import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from services.gateway.webhooks.models import WebhookSubscription
from services.gateway.webhooks.ssrf import (
    BlockedAddressError,
    Policy,
    check_literal,
    embedded_ipv4,
)
from services.gateway.webhooks.store_sqlite import SqliteWebhookStore
from shared.errors import AutoscorerError, ErrorCode
from shared.urls import check_target_url

NON_GLOBAL_V4 = [
    ipaddress.IPv4Network(n)
    for n in (
        "127.0.0.0/8",  # loopback
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",  # link-local, the metadata service 169.254.169.254
        "100.64.0.0/10",  # carrier-grade NAT
        "0.0.0.0/8",
        "192.0.0.0/29",
        "198.18.0.0/15",
        "240.0.0.0/4",
    )
]
MASK32 = 0xFFFFFFFF


@st.composite
def non_global_v4(draw):
    net = draw(st.sampled_from(NON_GLOBAL_V4))
    ip = ipaddress.IPv4Address(
        draw(st.integers(int(net.network_address), int(net.broadcast_address)))
    )
    assert not ip.is_global
    return ip


public_v4 = (
    st.integers(0, MASK32)
    .map(ipaddress.IPv4Address)
    .filter(lambda ip: ip.is_global and not ip.is_multicast)
)


def mapped(v4, _bits):
    return ipaddress.IPv6Address(0xFFFF << 32 | int(v4))


def compatible(v4, _bits):
    return ipaddress.IPv6Address(int(v4))


def nat64(v4, _bits):
    return ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(v4))


def nat64_local(v4, bits):
    base = int(ipaddress.IPv6Address("64:ff9b:1::"))
    return ipaddress.IPv6Address(base | (bits & (1 << 80) - 1) & ~MASK32 | int(v4))


def sixtofour(v4, bits):
    return ipaddress.IPv6Address(0x2002 << 112 | int(v4) << 80 | bits & (1 << 80) - 1)


def teredo_client(v4, bits):
    server = bits & MASK32
    flags_port = (bits >> 32) & MASK32
    return ipaddress.IPv6Address(
        0x20010000 << 96 | server << 64 | flags_port << 32 | (~int(v4) & MASK32)
    )


def teredo_server(v4, bits):
    return ipaddress.IPv6Address(0x20010000 << 96 | int(v4) << 64 | bits & ((1 << 64) - 1))


FORMS = [mapped, compatible, nat64, nat64_local, sixtofour, teredo_client, teredo_server]
bits = st.integers(0, (1 << 80) - 1)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(form=st.sampled_from(FORMS), v4=non_global_v4(), extra=bits)
def test_a_non_global_ipv4_inside_any_ipv6_form_is_refused(form, v4, extra):
    v6 = form(v4, extra)
    assert v4 in embedded_ipv4(v6) or v6 in (ipaddress.IPv6Address("::"), ipaddress.IPv6Address(1))
    policy = Policy([])
    assert not policy.permits("target.example", str(v6))
    with pytest.raises(BlockedAddressError):
        check_literal(policy, f"[{v6}]")


@settings(max_examples=200)
@given(form=st.sampled_from([mapped, nat64, sixtofour]), v4=public_v4, extra=bits)
def test_a_public_ipv4_inside_a_translatable_form_is_allowed(form, v4, extra):
    v6 = form(v4, extra)
    assert Policy([]).permits("target.example", str(v6))


@settings(max_examples=200)
@given(v4=non_global_v4(), form=st.sampled_from(FORMS), extra=bits)
def test_an_allow_list_entry_lets_one_embedded_private_ipv4_through(v4, form, extra):
    """The operator's allow-list (allow_private_targets) covers the IPv6 form itself."""
    v6 = form(v4, extra)
    assert Policy([f"{v6}/128"]).permits("target.example", str(v6))


@pytest.mark.parametrize(
    "address",
    [
        "::ffff:169.254.169.254",
        "::169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::7f00:1",
        "64:ff9b:1:a9fe:a9:fe00::",
        "2002:a9fe:a9fe::1",
        "2002:7f00:1::",
        "2002:c0a8:101::",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo client 127.0.0.1
        "2001:0:a00:1:8000:63bf:3fff:fdd2",  # Teredo server 10.0.0.1
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::",
    ],
)
def test_the_forms_table(address):
    assert not Policy([]).permits("h", address)


@pytest.mark.parametrize("address", ["2606:4700:4700::1111", "::ffff:1.1.1.1", "2002:101:101::"])
def test_global_ipv6_stays_allowed(address):
    assert Policy([]).permits("h", address)


# --- target URLs, checked when accepted --------------------------------------------------------

url_chars = st.characters(codec="utf-8", exclude_categories=("Cs",))
urlish = st.one_of(
    st.text(url_chars, max_size=60),
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
        st.sampled_from(["http", "https", "HTTP", "ftp", "", "http:"]),
        st.one_of(
            st.text(url_chars, max_size=30),
            st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}", fullmatch=True),
            st.builds(lambda ip: f"[{ip}", st.ip_addresses(v=6)),
            st.builds(lambda ip: f"[{ip}]", st.ip_addresses(v=6)),
            st.ip_addresses(v=4).map(str),
        ),
        st.one_of(st.just(""), st.integers(-5, 70000).map(lambda p: f":{p}"), st.text(max_size=6)),
        st.one_of(st.just(""), st.text(url_chars, max_size=20).map(lambda t: "/" + t)),
    ),
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(url=urlish)
def test_any_string_is_accepted_whole_or_refused_with_the_standard_error(url):
    try:
        accepted = check_target_url(url)
    except AutoscorerError as exc:
        refused: AutoscorerError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.code is ErrorCode.CONFIG_VALIDATION_ERROR
        assert refused.message.startswith("invalid target URL: ")
        assert len(refused.message) <= 100  # names the rule; never echoes the input
        return
    assert accepted == url
    parsed = URL(url)  # what aiohttp does when it connects: must not raise
    assert parsed.scheme in ("http", "https") and parsed.raw_host
    assert parsed.user is None and parsed.password is None
    assert parsed.port is not None and 1 <= parsed.port <= 65535
    if parsed.raw_host and ":" in parsed.raw_host:
        ipaddress.IPv6Address(parsed.raw_host)


# --- the SQLite store's files ------------------------------------------------------------------


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_the_sqlite_store_keeps_secrets_in_private_files(tmp_path):
    old = os.umask(0o022)  # the usual umask: files 0644 unless made otherwise
    try:
        path = tmp_path / "state" / "hooks.sqlite3"
        store = SqliteWebhookStore(path)
        await store.init()
        try:
            sub = WebhookSubscription(owner="a", url="https://a.example/", event_types=["x"])
            await store.add_subscription(sub)  # writes the -wal
            assert _mode(path.parent) == 0o700
            for suffix in ("", "-wal", "-shm"):
                assert (tmp_path / "state" / f"hooks.sqlite3{suffix}").exists()
                assert _mode(f"{path}{suffix}") == 0o600, suffix
        finally:
            await store.close()
    finally:
        os.umask(old)


async def test_a_world_readable_store_file_is_tightened(tmp_path):
    path = tmp_path / "hooks.sqlite3"
    first = SqliteWebhookStore(path)
    await first.init()
    await first.close()
    os.chmod(path, 0o644)
    store = SqliteWebhookStore(path)
    await store.init()
    try:
        assert _mode(path) == 0o600
        assert _mode(tmp_path) == stat.S_IMODE(os.stat(tmp_path).st_mode)  # not ours: untouched
    finally:
        await store.close()


class _Answers:
    """Stands in for DNS (the one part a test cannot point at its own records): the answers a
    hostile name could resolve to."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host, port=0, family=0):
        return [
            {"hostname": host, "host": a, "port": port, "family": 0, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self):
        pass


async def test_the_resolver_refuses_names_that_resolve_to_embedded_private_ipv4():
    from services.gateway.webhooks.ssrf import GuardedResolver

    resolver = GuardedResolver(Policy([]))
    try:
        resolver._inner = _Answers("64:ff9b::a9fe:a9fe", "2002:7f00:1::")
        with pytest.raises(BlockedAddressError):
            await resolver.resolve("evil.example", 80)
        resolver._inner = _Answers("::ffff:10.0.0.1", "2606:4700:4700::1111")
        [kept] = await resolver.resolve("mixed.example", 80)
        assert kept["host"] == "2606:4700:4700::1111"  # only the global answer is connected to
    finally:
        await resolver.close()


async def test_a_store_made_before_deliveries_had_a_tenant_is_upgraded(tmp_path):
    import sqlite3

    from services.gateway.webhooks.models import Delivery

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE webhooks (id TEXT PRIMARY KEY, owner TEXT NOT NULL, doc TEXT NOT NULL);"
        "CREATE TABLE webhook_deliveries (id TEXT PRIMARY KEY, subscription_id TEXT,"
        " status TEXT NOT NULL, next_attempt_at TEXT NOT NULL, claimed_until TEXT,"
        " created_at TEXT NOT NULL, doc TEXT NOT NULL);"
    )
    conn.close()
    store = SqliteWebhookStore(path)
    await store.init()
    try:
        new = Delivery(
            id="msg_1",
            subscription_id=None,
            url="https://a.example/",
            event_id="e",
            event_type="job.failed",
            job_id=None,
            body={},
            tenant="alice",
        )
        assert await store.add_delivery(new)
        from datetime import timedelta

        from shared.jobs import now_ms

        assert await store.claim_due(now_ms(), timedelta(seconds=5), 10, ["alice"]) == []
        [claimed] = await store.claim_due(now_ms(), timedelta(seconds=5), 10, ["bob"])
        assert claimed.tenant == "alice"
    finally:
        await store.close()
