"""The address policy: which addresses a client's URL may reach, and pinning to the checked one.

Only the pure check sees non-loopback addresses here; nothing in this file opens a connection.
Names are resolved by FakeDNS, or by the real getaddrinfo only for loopback spellings that it
answers without asking a DNS server (numbers, /etc/hosts).
"""

from __future__ import annotations

import asyncio

import pytest

from app.core import addresses
from app.core.addresses import (
    AddressPolicy,
    AddressRefused,
    HostUnresolved,
    Pinned,
    forbidden_address,
)
from app.core.errors import InvalidRequest
from app.core.options import JobOptions
from app.core.settings import load_settings
from app.jobs.destinations import check_destinations
from tests.unit.fakedns import FakeDNS


def policy(
    networks: str = "", *, allow_all: bool = False, dns: FakeDNS | None = None
) -> AddressPolicy:
    """The policy a gateway with these settings uses (the CIDRs parsed as the setting is)."""
    settings = load_settings(allowed_private_networks=networks, allow_private_urls=allow_all)
    made = AddressPolicy.from_settings(settings)
    if dns is not None:
        made.resolver = dns
    return made


FORBIDDEN = [
    # IPv4: this host, loopback, RFC 1918, link-local and cloud metadata, shared (CGNAT),
    # IETF, documentation, benchmarking, multicast, reserved, broadcast
    "0.0.0.0", "127.0.0.1", "127.255.255.254", "10.0.0.1", "10.255.255.255", "172.16.0.1",
    "172.31.255.255", "192.168.0.1", "192.168.255.255", "169.254.0.1", "169.254.169.254",
    "100.64.0.1", "100.127.255.255", "192.0.0.1", "192.0.2.1", "198.18.0.1", "224.0.0.1",
    "239.255.255.250", "240.0.0.1", "255.255.255.255",
    # IPv6: unspecified, loopback, link-local (with a zone id too), unique local (fc00::/7, AWS's
    # metadata fd00:ec2::254), deprecated site-local, multicast, documentation, discard
    "::", "::1", "fe80::1", "fe80::1%eth0", "fe80::a:b%2", "fc00::1", "fd00:ec2::254",
    "fdff:ffff::1", "fec0::1", "ff02::1", "2001:db8::1", "100::1",
    # IPv6 forms of private IPv4: mapped, compatible, translated, NAT64 (well-known and
    # local-use), 6to4
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:172.16.0.1", "::ffff:192.168.1.1",
    "::ffff:169.254.169.254", "::ffff:0.0.0.0", "::127.0.0.1", "::ffff:0:a00:1",
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b:1::808:808", "2002:a9fe:a9fe::1",
    "2002:7f00:1::",
]  # fmt: skip
PUBLIC = [
    "8.8.8.8", "1.1.1.1", "9.255.255.255", "11.0.0.0", "172.15.255.255", "172.32.0.0",
    "192.167.255.255", "192.169.0.0", "169.253.255.255", "169.255.0.0", "100.63.255.255",
    "100.128.0.0", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808",
    "2002:808:808::1",
]  # fmt: skip


@pytest.mark.parametrize("address", FORBIDDEN)
def test_non_public_addresses_are_forbidden(address: str) -> None:
    assert forbidden_address(address)
    assert policy().refused(address)
    assert not policy(allow_all=True).refused(address)  # ALLOW_PRIVATE_URLS lets all through


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not forbidden_address(address)
    assert not policy().refused(address)


@pytest.mark.parametrize(
    ("networks", "address", "refused"),
    [
        ("127.0.0.2/32", "127.0.0.2", False),
        ("127.0.0.2/32", "127.0.0.1", True),
        ("127.0.0.2/32", "::ffff:127.0.0.2", False),  # the same host, written as IPv6
        ("127.0.0.1/32", "::1", True),  # IPv4 loopback allowed is not IPv6 loopback
        ("10.0.0.0/8", "10.20.30.40", False),
        ("10.0.0.0/8", "::ffff:10.20.30.40", False),
        ("10.0.0.0/8", "172.16.0.1", True),
        ("10.0.0.0/8, 192.168.5.0/24", "192.168.5.9", False),
        ("10.0.0.0/8, 192.168.5.0/24", "192.168.6.9", True),
        ("169.254.169.254/32", "169.254.169.254", False),  # an operator may, if they must
        ("169.254.169.254/32", "169.254.169.253", True),
        ("fe80::/10", "fe80::1%eth0", False),  # the zone id does not hide it
        ("fc00::/7", "fd12:3456::1", False),
        ("fc00::/7", "::1", True),
    ],
)
def test_allowed_networks_let_only_their_addresses_through(
    networks: str, address: str, refused: bool
) -> None:
    assert policy(networks).refused(address) is refused


async def test_a_name_with_one_forbidden_address_among_several_is_refused() -> None:
    dns = FakeDNS(
        {"mixed.test": [["8.8.8.8", "10.0.0.1"]], "other.test": [["10.0.0.1", "8.8.8.8"]]}
    )
    for host in ("mixed.test", "other.test"):
        with pytest.raises(AddressRefused, match=r"\(10\.0\.0\.1\)"):
            await policy(dns=dns).check(f"http://{host}/hook")
    allowed_one = FakeDNS({"two.test": [["127.0.0.2", "127.0.0.1"]]})
    with pytest.raises(AddressRefused, match=r"\(127\.0\.0\.1\)"):
        await policy("127.0.0.2/32", dns=allowed_one).check("http://two.test/hook")


async def test_the_refusal_names_the_address_and_the_settings() -> None:
    dns = FakeDNS({"metadata.test": [["169.254.169.254"]]})
    with pytest.raises(AddressRefused) as caught:
        await policy(dns=dns).check("http://metadata.test/latest/meta-data/")
    message = str(caught.value)
    assert "metadata.test (169.254.169.254)" in message
    assert "private, loopback or link-local" in message
    assert "ALLOWED_PRIVATE_NETWORKS" in message and "ALLOW_PRIVATE_URLS" in message


@pytest.mark.parametrize(
    ("url", "pinned_url", "host_header"),
    [
        ("http://hooks.test:8080/in?x=1", "http://127.0.0.2:8080/in?x=1", "hooks.test:8080"),
        ("https://hooks.test/in", "https://127.0.0.2:443/in", "hooks.test"),
        ("http://user:pw@hooks.test/in", "http://user:pw@127.0.0.2:80/in", "hooks.test"),
    ],
)
async def test_pinned_url_goes_to_the_checked_address_and_keeps_the_name(
    url: str, pinned_url: str, host_header: str
) -> None:
    pinned = await policy("127.0.0.2/32", dns=FakeDNS({"hooks.test": [["127.0.0.2"]]})).pin(url)
    assert pinned.url == pinned_url
    assert pinned.address == "127.0.0.2"
    assert pinned.headers == {"Host": host_header}
    assert pinned.extensions == {"sni_hostname": "hooks.test"}
    assert pinned.private  # allowed by a setting, not public


@pytest.mark.parametrize(
    ("address", "netloc"),
    [("fd00::5", "[fd00::5]:80"), ("fe80::1%eth0", "[fe80::1%25eth0]:80")],
)
async def test_pinned_ipv6_addresses_are_bracketed(address: str, netloc: str) -> None:
    dns = FakeDNS({"v6.test": [[address]]})
    pinned = await policy("fc00::/7,fe80::/10", dns=dns).pin("http://v6.test/x")
    assert pinned.url == f"http://{netloc}/x"


async def test_each_pin_resolves_again() -> None:
    """A name that resolved to an allowed address can turn to a refused one (DNS rebinding)."""
    dns = FakeDNS({"rebind.test": [["127.0.0.2"], ["127.0.0.1"]]})
    checked = policy("127.0.0.2/32", dns=dns)
    await checked.check("http://rebind.test/x")
    with pytest.raises(AddressRefused, match=r"rebind\.test \(127\.0\.0\.1\)"):
        await checked.pin("http://rebind.test/x")
    assert dns.asked == ["rebind.test", "rebind.test"]


def test_only_non_public_pins_are_private() -> None:
    assert Pinned("http://127.0.0.2:80/", "127.0.0.2").private
    assert Pinned("http://[::ffff:7f00:2]:80/", "::ffff:127.0.0.2").private
    assert not Pinned("http://8.8.8.8:80/", "8.8.8.8").private  # built, never requested


async def test_names_that_do_not_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HostUnresolved, match=r"cannot resolve nowhere\.test"):
        await policy(dns=FakeDNS({})).check("http://nowhere.test/x")
    with pytest.raises(HostUnresolved, match="no addresses"):
        await policy(dns=FakeDNS({"empty.test": [[]]})).check("http://empty.test/x")

    async def hanging(host: str, port: int) -> list[str]:
        await asyncio.sleep(10)
        return ["8.8.8.8"]

    monkeypatch.setattr(addresses, "RESOLVE_TIMEOUT_S", 0.05)
    slow = policy()
    slow.resolver = hanging
    with pytest.raises(HostUnresolved, match="no answer within"):
        await slow.check("http://slow.test/x")


@pytest.mark.parametrize("url", ["http:///no-host", "http://hooks.test:99999/"])
async def test_urls_without_a_usable_host_are_refused(url: str) -> None:
    with pytest.raises(AddressRefused):
        await policy(allow_all=True, dns=FakeDNS({"hooks.test": [["8.8.8.8"]]})).check(url)


# Loopback written every way getaddrinfo takes it, resolved by the real resolver (no DNS server
# is asked: these are numbers, or in /etc/hosts), with the address the refusal must name.
LOOPBACK_SPELLINGS = [
    ("127.0.0.1", "127.0.0.1"), ("127.0.0.2", "127.0.0.2"), ("localhost", "127.0.0.1"),
    ("[::1]", "::1"), ("0.0.0.0", "0.0.0.0"), ("2130706433", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"), ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"), ("127.1", "127.0.0.1"),
]  # fmt: skip


@pytest.mark.parametrize(("host", "address"), LOOPBACK_SPELLINGS)
async def test_every_spelling_of_loopback_is_refused(host: str, address: str) -> None:
    with pytest.raises(AddressRefused) as caught:
        await policy().check(f"http://{host}:9/x")
    if host != "localhost":  # localhost may resolve to ::1 first
        assert f"({address})" in str(caught.value) or str(caught.value).startswith(address)


DESTINATIONS = FakeDNS(
    {"loop.test": [["127.0.0.1"]], "v6loop.test": [["::1"]], "metadata.test": [["169.254.169.254"]],
     "public.test": [["8.8.8.8"]], "lan.test": [["10.0.0.1"]]}
)  # fmt: skip


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"webhook": "http://loop.test:9/x"}, "webhook"),
        ({"webhook_v2": "http://v6loop.test:9/x"}, "webhook_v2"),
        ({"http_upload": {"url_prefix": "http://metadata.test/up/"}}, "http_upload.url_prefix"),
        ({"webhook_v2": "http://nowhere.test/x"}, "webhook_v2"),
        ({"webhook": "http://public.test/x", "webhook_v2": "http://lan.test/x"}, "webhook_v2"),
        ({"webhook": "http://public.test/x", "http_upload": {"url_prefix": "http://nowhere.test/"}},
         "http_upload.url_prefix"),
    ],
)  # fmt: skip
async def test_a_request_naming_a_refused_url_is_a_located_400(
    body: dict[str, object], location: str
) -> None:
    options = JobOptions.model_validate(body)
    with pytest.raises(InvalidRequest) as caught:
        await check_destinations(options, policy(dns=DESTINATIONS))
    assert caught.value.status == 400
    assert caught.value.location == location
    assert caught.value.message.startswith(f"{location}: ")


async def test_allowed_destinations_pass() -> None:
    options = JobOptions.model_validate(
        {"webhook": "http://loop.test:9/a", "webhook_v2": "http://public.test/b",
         "http_upload": {"url_prefix": "http://loop.test:9/up/"}}
    )  # fmt: skip
    await check_destinations(options, policy("127.0.0.1/32", dns=DESTINATIONS))
    assert [location for location, _ in options.destinations()] == [
        "webhook", "webhook_v2", "http_upload.url_prefix"
    ]  # fmt: skip
