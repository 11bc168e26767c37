"""Where webhooks may go: the server-side request forgery (SSRF) guard.

A callback URL comes from a client, but the dispatcher POSTs it from inside the deployment's
network. Unguarded, a client could make it POST to Redis, PostgreSQL, the ingress, the host, or a
cloud metadata endpoint (169.254.169.254). So a webhook goes only to globally routable addresses,
or to networks an operator explicitly trusts (``SIFT_WEBHOOK_ALLOWED_NETWORKS``).

Host names are checked after resolution, at delivery time, and the dispatcher then connects to the
address it checked (it does not let the HTTP client resolve the name again): a DNS answer that
changes in between (DNS rebinding) cannot redirect it. Standard library only, so that callback
registration (producers, the ingress) can use it without an HTTP client.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import TypeAlias

from sift.settings import SettingsError

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network
Resolver: TypeAlias = Callable[[str, int], Sequence[str]]
"""``(host, port) -> addresses`` as text, in the order to try them; raises :class:`OSError` when it cannot."""

ALLOWED_NETWORKS_ENV = "SIFT_WEBHOOK_ALLOWED_NETWORKS"
"""Comma-separated CIDRs of trusted receivers that may be private, e.g. ``10.0.5.0/24,fd00:5::/64``."""

_NAT64 = IPv6Network("64:ff9b::/96")
_HOW_TO_ALLOW = f"if the receiver is trusted, allow its network with {ALLOWED_NETWORKS_ENV}"


class ForbiddenDestination(ValueError):
    """The callback's address is not globally routable and not in the allowed networks.

    Permanent: the dispatcher records the batch as failed and never retries it.
    """


def parse_networks(value: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """Networks from CIDRs (a comma-separated string or an iterable); a bare address is a /32 or /128.

    Raises :class:`ValueError` naming the first entry that is not a network. Host bits must be zero:
    ``10.0.5.1/24`` is refused rather than guessed to mean ``10.0.5.0/24``.
    """
    entries = value.split(",") if isinstance(value, str) else value
    networks: list[IPNetwork] = []
    for entry in entries:
        text = entry.strip()
        if not text:
            continue
        try:
            networks.append(ip_network(text))
        except ValueError as error:
            raise ValueError(f"{text!r} is not a network in CIDR notation such as 10.0.5.0/24: {error}") from None
    return tuple(networks)


@functools.lru_cache(maxsize=8)
def _parse_environment_value(value: str) -> tuple[IPNetwork, ...]:
    try:
        return parse_networks(value)
    except ValueError as error:
        raise SettingsError(f"{ALLOWED_NETWORKS_ENV}: {error}") from None


def allowed_networks_from_env() -> tuple[IPNetwork, ...]:
    """The networks of ``SIFT_WEBHOOK_ALLOWED_NETWORKS`` (none when unset); a bad value is a :class:`SettingsError`.

    Read on every call (parsed once per distinct value), so the ingress and ``register_callback``
    follow the same setting as ``sift deliver``.
    """
    return _parse_environment_value(os.environ.get(ALLOWED_NETWORKS_ENV, ""))


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is one (as a URL's host, without brackets), else None.

    Numeric forms that resolvers also read as IPv4 (``2130706433``, ``0x7f.1``, ``127.1``) count as addresses.
    """
    try:
        return ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefABCDEFxX." for c in host):
        try:
            return IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def embedded_ipv4(address: IPAddress) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, NAT64 ``64:ff9b::/96``, 6to4), else None."""
    if isinstance(address, IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def non_global_kind(address: IPAddress) -> str | None:
    """Why ``address`` is not a public internet address (``"loopback"``, ``"private"``, ...); None when it is one."""
    target = embedded_ipv4(address) or address
    # Most specific first: 127.0.0.1 is also "private" to ipaddress, 169.254.169.254 too.
    if target.is_unspecified:
        return "unspecified"
    if target.is_loopback:
        return "loopback"
    if target.is_link_local:
        return "link-local (where cloud metadata services live)"
    if target.is_multicast:  # ipaddress calls multicast "global"
        return "multicast"
    if target.is_reserved:  # also IPv4-compatible ::a.b.c.d, which ipaddress calls "global"
        return "reserved"
    if target.is_private:
        return "private"
    if isinstance(target, IPv6Address) and target.is_site_local:
        return "site-local"
    if not target.is_global:
        return "shared or special-purpose (such as carrier-grade NAT 100.64.0.0/10)"
    return None


def is_allowed(address: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    """True when ``address`` (or the IPv4 address it embeds) is in one of the ``allowed`` networks."""
    candidates = [address, embedded_ipv4(address)]
    return any(candidate in network for candidate in candidates if candidate is not None for network in allowed)


def check_address(address: IPAddress, allowed: Sequence[IPNetwork]) -> None:
    """Raise :class:`ForbiddenDestination` unless ``address`` is globally routable or allowed."""
    kind = non_global_kind(address)
    if kind is not None and not is_allowed(address, allowed):
        raise ForbiddenDestination(
            f"callback address {address} is {kind}, not globally routable: refused to keep webhooks "
            f"out of the internal network; {_HOW_TO_ALLOW}"
        )


def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer for ``host`` (``getaddrinfo``), in its preferred order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def resolve_destination(
    host: str, port: int, allowed: Sequence[IPNetwork], resolver: Resolver = system_resolver
) -> tuple[IPAddress, ...]:
    """The addresses of ``host`` that a webhook may be sent to, in the resolver's order; connect only to these.

    A literal address is not resolved. Addresses that are not globally routable (and not allowed)
    are left out; when none is left, raises :class:`ForbiddenDestination`. Raises :class:`OSError`
    when the name does not resolve (a DNS outage may pass: worth retrying).
    """
    literal = literal_address(host)
    if literal is not None:
        check_address(literal, allowed)
        return (literal,)
    answers = [ip_address(text) for text in dict.fromkeys(resolver(host, port))]
    if not answers:
        raise OSError(f"no address found for {host}")
    usable = tuple(a for a in answers if non_global_kind(a) is None or is_allowed(a, allowed))
    if not usable:
        refused = ", ".join(f"{a} ({non_global_kind(a)})" for a in answers[:4])
        raise ForbiddenDestination(
            f"callback host {host} resolves only to addresses that are not globally routable: {refused}; "
            f"refused to keep webhooks out of the internal network; {_HOW_TO_ALLOW}"
        )
    return usable
