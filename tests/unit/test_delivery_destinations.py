"""The SSRF guard: which addresses a webhook may go to, the allowed networks, and registration-time checks."""

from __future__ import annotations

import socket
from ipaddress import ip_address

import pytest
import redis

from sift.delivery import register_callback, validate_callback_url
from sift.delivery.destinations import (
    ALLOWED_NETWORKS_ENV,
    ForbiddenDestination,
    Resolver,
    check_address,
    parse_networks,
    resolve_destination,
)
from sift.delivery.settings import load_delivery_settings
from sift.delivery.webhooks import WebhookOptions
from sift.settings import SettingsError


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.5.4", "private"),
        ("192.168.0.10", "private"),
        ("fd00::5", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("fec0::1", "site-local"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:a9fe:a9fe::", "link-local"),  # 6to4 of 169.254.169.254
        ("::127.0.0.1", "reserved"),  # IPv4-compatible, deprecated
    ],
)
def test_addresses_that_are_not_globally_routable_are_refused(address: str, kind: str) -> None:
    with pytest.raises(ForbiddenDestination, match=kind) as refused:
        check_address(ip_address(address), ())
    assert "SIFT_WEBHOOK_ALLOWED_NETWORKS" in str(refused.value)  # says how to allow a trusted receiver


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::"],
)
def test_public_addresses_pass(address: str) -> None:
    check_address(ip_address(address), ())


def test_allowed_networks_let_trusted_private_receivers_through_and_nothing_else() -> None:
    allowed = parse_networks("10.0.5.0/24, fd00:5::/64")
    check_address(ip_address("10.0.5.7"), allowed)
    check_address(ip_address("::ffff:10.0.5.7"), allowed)  # the same receiver, written as IPv6
    check_address(ip_address("fd00:5::9"), allowed)
    for outside in ("10.0.6.1", "127.0.0.1", "169.254.169.254", "fd00:6::1"):
        with pytest.raises(ForbiddenDestination):
            check_address(ip_address(outside), allowed)


def test_network_lists_are_parsed_with_clear_errors() -> None:
    assert [str(n) for n in parse_networks(" 10.0.5.0/24 ,, 127.0.0.1 ,::1")] == [
        "10.0.5.0/24",
        "127.0.0.1/32",
        "::1/128",
    ]
    assert parse_networks("") == ()
    with pytest.raises(ValueError, match=r"'10\.0\.5\.1/24' is not a network.*host bits set"):
        parse_networks("10.0.5.0/24,10.0.5.1/24")
    with pytest.raises(ValueError, match="'intranet' is not a network"):
        parse_networks(["intranet"])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379/",
        "http://10.0.0.5:8080/cb",
        "http://169.254.169.254/latest/meta-data/",
        "https://[::1]:5432/",
        "http://[::ffff:10.0.0.1]/",
        "http://0x7f.1/",  # what resolvers read as 127.0.0.1
        "http://2130706433/",  # 127.0.0.1 as one number
        "http://user:pw@192.168.1.1/x",
    ],
)
def test_literal_non_public_ips_are_refused_at_registration(url: str) -> None:
    with pytest.raises(ForbiddenDestination, match="not globally routable"):
        validate_callback_url(url)


def test_host_names_are_not_resolved_at_registration() -> None:
    # localhost resolves to loopback: only the dispatcher, at delivery time, knows what a name resolves to.
    assert validate_callback_url("http://localhost:8080/hook") == "http://localhost:8080/hook"
    assert validate_callback_url("https://metadata.internal/") == "https://metadata.internal/"


def test_allowed_networks_apply_at_registration_from_argument_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://10.0.5.7:8080/hook"
    assert validate_callback_url(url, allowed_networks=parse_networks("10.0.5.0/24")) == url
    with pytest.raises(ForbiddenDestination):
        validate_callback_url(url, allowed_networks=parse_networks("10.0.6.0/24"))
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, "10.0.5.0/24")
    assert validate_callback_url(url) == url  # the ingress reads the dispatcher's setting
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, "10.0.5.300/24")
    with pytest.raises(SettingsError, match=ALLOWED_NETWORKS_ENV):
        validate_callback_url(url)


def test_register_callback_refuses_a_private_ip_before_touching_redis() -> None:
    nowhere = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)  # reaching it: ConnectionError
    with pytest.raises(ForbiddenDestination, match=r"169\.254\.169\.254 is link-local"):
        register_callback(nowhere, "sift", "job-1", "http://169.254.169.254/latest/meta-data/", ttl_s=60)


def answers(table: dict[str, list[str]]) -> Resolver:
    """A resolver answering from ``table`` (a DNS of the test's own); an unknown name does not resolve."""

    def resolve(host: str, _port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


def test_only_checked_addresses_of_a_name_are_kept_in_the_resolvers_order() -> None:
    dns = answers({"mixed.example": ["10.0.0.1", "93.184.215.14", "169.254.169.254", "2606:4700::1", "93.184.215.14"]})
    kept = resolve_destination("mixed.example", 443, (), dns)
    assert [str(a) for a in kept] == ["93.184.215.14", "2606:4700::1"]
    allowed = resolve_destination("mixed.example", 443, parse_networks("10.0.0.0/8"), dns)
    assert [str(a) for a in allowed] == ["10.0.0.1", "93.184.215.14", "2606:4700::1"]


def test_a_name_with_only_internal_addresses_is_refused_listing_them() -> None:
    dns = answers({"rebind.example": ["169.254.169.254", "::1"]})
    with pytest.raises(ForbiddenDestination, match=r"rebind.example resolves only to .*169.254.169.254 \(link-local"):
        resolve_destination("rebind.example", 80, (), dns)


def test_a_name_that_does_not_resolve_is_an_os_error_and_a_literal_ip_is_not_resolved() -> None:
    dns = answers({"empty.example": []})
    with pytest.raises(OSError):
        resolve_destination("nxdomain.example", 80, (), dns)
    with pytest.raises(OSError, match="no address"):
        resolve_destination("empty.example", 80, (), dns)
    assert [str(a) for a in resolve_destination("93.184.215.14", 80, (), dns)] == ["93.184.215.14"]
    with pytest.raises(ForbiddenDestination):
        resolve_destination("0x7f.1", 80, (), dns)  # never looked up as a name


def test_the_dispatcher_reads_allowed_networks_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_WEBHOOK_SECRET", "s" * 32)
    assert WebhookOptions.from_settings(load_delivery_settings()).allowed_networks == ()  # the default: none
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, "10.0.5.0/24,127.0.0.1")
    options = WebhookOptions.from_settings(load_delivery_settings())
    assert [str(n) for n in options.allowed_networks] == ["10.0.5.0/24", "127.0.0.1/32"]
    monkeypatch.setenv(ALLOWED_NETWORKS_ENV, '["10.0.5.0/24"]')
    with pytest.raises(SettingsError, match=f"{ALLOWED_NETWORKS_ENV}: .*not a network"):
        load_delivery_settings()
