"""Fetching a URL someone else chose, without becoming an SSRF hole: the one download loop
behind image URLs people paste (``intake.intake_url``) and the masks an engine hands back
(``masks.download``).

Every connection, every redirect hop included, goes through a network backend that resolves
the host itself, refuses it when any resolved address is not allowed, and then connects to
exactly the address it checked, so DNS rebinding cannot swap in a private address between the
check and the connect. One deadline covers DNS, connect, TLS and every read, so a slow or
trickling server costs at most the timeout. Redirects are followed one hop at a time, each
target checked again by the caller's own URL rules.

Failures are ``FetchError``s with a ``kind``; each caller words them for its own readers.

Which addresses may be reached is ``address_policy``'s, at call time: public ones, and the
private hosts, addresses and networks SAM3WEB_OUTBOUND_ALLOW names.

``post`` sends a callback to an API caller's URL through the same guard (one attempt, no
redirects followed), and ``check_destination`` refuses a URL whose host resolves to an address
that may not be reached, before anything is sent.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
from django.conf import settings

logger = logging.getLogger(__name__)

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}


class FetchError(Exception):
    """A download that failed. ``kind`` is one of: blocked (a private or local address), dns
    (the host has no address), timeout, tls (the certificate could not be verified), connect,
    broken (the connection failed mid-way), status (an HTTP error: ``status``, ``reason``),
    redirect_loop, too_many_redirects, bad_redirect (an unusable Location), too_large."""

    def __init__(self, kind: str, host: str = "", *, status: int = 0, reason: str = "") -> None:
        super().__init__(f"{kind} {host} {status or ''}".strip())
        self.kind = kind
        self.host = host
        self.status = status
        self.reason = reason


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Special-purpose IPv4 blocks that some Python versions still call global.
_ALSO_BLOCKED = (
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("192.88.99.0/24"),  # deprecated 6to4 relay anycast
)


def is_public_address(ip: str | IPAddress) -> bool:
    """True only for globally routable unicast addresses. IPv6 forms that embed an IPv4 address
    (IPv4-mapped, NAT64, 6to4) are judged by the embedded address; Teredo is refused outright."""
    try:
        addr = ip if isinstance(ip, IPAddress) else ipaddress.ip_address(str(ip).strip("[]"))
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return is_public_address(addr.ipv4_mapped)
        if addr in _NAT64:
            return is_public_address(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
        if addr.sixtofour is not None:
            return is_public_address(addr.sixtofour)
        if addr.teredo is not None or addr.is_site_local:
            return False
    elif any(addr in net for net in _ALSO_BLOCKED):
        return False
    return addr.is_global and not (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
    )


# Cloud metadata services: refused even inside an allowed network, unless named exactly.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)

Policy = Callable[[IPAddress, str], bool]


def address_policy() -> Policy:
    """Which (address, host name) pairs may be reached, at call time: public addresses, and the
    hosts, addresses and networks of SAM3WEB_OUTBOUND_ALLOW (the team's own network). The
    test suite's SAM3WEB_FETCH_ALLOW_PRIVATE = True lets anything through."""
    if getattr(settings, "SAM3WEB_FETCH_ALLOW_PRIVATE", False) is True:
        return _allow_any
    hosts: set[str] = set()
    addresses: set[IPAddress] = set()
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for item in getattr(settings, "SAM3WEB_OUTBOUND_ALLOW", []):
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            hosts.add(item.lower().rstrip("."))
            continue
        if network.num_addresses == 1:
            addresses.add(network.network_address)
        else:
            networks.append(network)

    def allowed(addr: IPAddress, host: str) -> bool:
        if addr in addresses:
            return True
        if addr in METADATA_ADDRESSES or (
            isinstance(addr, ipaddress.IPv6Address)
            and addr.ipv4_mapped is not None
            and addr.ipv4_mapped in METADATA_ADDRESSES
        ):
            return False
        if is_public_address(addr):
            return True
        if host.lower().strip("[]").rstrip(".") in hosts:
            return True
        return any(addr.version == net.version and addr in net for net in networks)

    return allowed


class _DeadlineStream(httpcore.NetworkStream):
    """Clamps every socket wait to the fetch's overall deadline, so a slow server cannot stretch
    a download past it, whatever the per-operation timeouts say."""

    def __init__(self, inner: httpcore.NetworkStream, backend: GuardedNetworkBackend) -> None:
        self._inner = inner
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._backend.time_left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._backend.time_left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, self._backend.time_left(timeout)
        )
        return _DeadlineStream(inner, self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedNetworkBackend(httpcore.SyncBackend):
    """An httpcore backend that resolves the host itself, refuses the connection if ANY resolved
    address is not allowed, and then connects to the checked address (never re-resolving), with
    every wait bounded by one overall deadline. TLS is unaffected: httpcore still verifies the
    certificate and sends SNI for the hostname of the request, not for the IP we connect to."""

    def __init__(
        self,
        *,
        allowed: Policy | None = None,
        deadline: float | None = None,
    ) -> None:
        self._allowed: Policy = allowed or (lambda addr, _host: is_public_address(addr))
        self._deadline = deadline

    def time_left(self, timeout: float | None = None) -> float | None:
        """The smaller of timeout and the time to the deadline; raises once it has passed."""
        if self._deadline is None:
            return timeout
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise FetchError("timeout")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self.check(host, port, timeout)
        last_error: Exception | None = None
        for addr in addresses:  # like socket.create_connection, but over checked addresses only
            try:
                stream = super().connect_tcp(
                    str(addr),
                    port,
                    timeout=self.time_left(timeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                last_error = exc
                continue
            return _DeadlineStream(stream, self)
        assert last_error is not None
        raise last_error

    def check(self, host: str, port: int, timeout: float | None = None) -> list[IPAddress]:
        """The host's addresses, when every one of them may be reached; else FetchError."""
        addresses = self._resolve(host, port, self.time_left(timeout))
        for addr in addresses:
            if not self._allowed(addr, host):
                logger.warning("refused to connect to %s (%s)", host, addr)
                raise FetchError("blocked", host)
        return addresses

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise FetchError("blocked", path)

    def _resolve(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        try:  # a literal IP needs no lookup (and the allowed check sees it exactly)
            return [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            pass
        # getaddrinfo cannot be interrupted, so it runs in a daemon thread that we stop waiting
        # for at the deadline. It also turns '127.1', '0x7f000001' and '2130706433' into
        # 127.0.0.1 exactly as the connect would, so those are checked like any other address.
        box: dict[str, Any] = {}

        def lookup() -> None:
            try:
                box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except Exception as exc:  # gaierror, UnicodeError for odd names, ...
                box["error"] = exc

        worker = threading.Thread(target=lookup, name="sam3web-dns", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise FetchError("timeout", host)
        if "error" in box or not box.get("infos"):
            raise FetchError("dns", host)
        addresses: list[IPAddress] = []
        for _family, _type, _proto, _canon, sockaddr in box["infos"]:
            addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if addr not in addresses:
                addresses.append(addr)
        return addresses


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One verified SSL context for every fetch: building one loads the CA bundle (~17 ms),
    which would otherwise be paid per URL (32 times for a run's masks). It is thread-safe."""
    return httpx.create_ssl_context(trust_env=False)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with its connection pool rebuilt on GuardedNetworkBackend."""

    def __init__(self, backend: GuardedNetworkBackend) -> None:
        ssl_context = shared_ssl_context()
        super().__init__(verify=ssl_context, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=4,
            max_keepalive_connections=2,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )


def origin(url: httpx.URL) -> Origin:
    return (url.scheme, url.host.lower(), url.port or _DEFAULT_PORTS.get(url.scheme, 0))


@dataclass(frozen=True)
class Fetched:
    body: bytes
    content_type: str  # as the server claims it (lowercase, without parameters): untrusted


def fetch(
    url: httpx.URL,
    *,
    check_url: Callable[[str], httpx.URL],
    timeout: float,
    max_bytes: int,
    headers: Mapping[str, str],
    per_wait: float | None = None,
    max_redirects: int | None = None,
    trusted: Origin | None = None,
    deadline: float | None = None,
) -> Fetched:
    """GET ``url`` (already through ``check_url``) and its redirects, SSRF-safely, within
    ``timeout`` seconds in all (or by ``deadline``, a time.monotonic() value). Each redirect
    target goes through ``check_url`` too, which raises the caller's own error for a URL it will
    not follow. ``per_wait`` bounds each socket wait (default: the whole timeout). ``trusted``
    is an origin whose addresses are not checked (an engine's own storage); trust is per hop,
    so a redirect from it to anywhere else is checked like any URL. Raises FetchError."""
    deadline = deadline if deadline is not None else time.monotonic() + timeout
    policy = address_policy()
    hops = settings.SAM3WEB_FETCH_MAX_REDIRECTS if max_redirects is None else max_redirects
    waits = httpx.Timeout(timeout if per_wait is None else per_wait).as_dict()
    # Images are compressed already; asking for identity keeps compression bombs out.
    send = {**headers, "Accept-Encoding": "identity"}
    current = url
    seen = {str(current)}
    # The transport is used directly rather than through httpx.Client: the client would parse
    # every Location header itself (and raise on 'javascript:...'), pick up proxy settings,
    # and keep cookies. Redirects are ours to judge, one hop at a time.
    for _hop in range(hops + 1):
        allowed = _allow_any if trusted is not None and origin(current) == trusted else policy
        backend = GuardedNetworkBackend(allowed=allowed, deadline=deadline)
        with GuardedTransport(backend) as transport, _transport_errors(current.host):
            request = httpx.Request("GET", current, headers=send, extensions={"timeout": waits})
            response = transport.handle_request(request)
            response.request = request
            try:
                location = response.headers.get("location")
                if response.status_code in REDIRECT_CODES and location:
                    current = _redirect_target(current, location, check_url)
                    if str(current) in seen:
                        raise FetchError("redirect_loop", current.host)
                    seen.add(str(current))
                    continue
                if not response.is_success:
                    raise FetchError(
                        "status",
                        current.host,
                        status=response.status_code,
                        reason=response.reason_phrase,
                    )
                body = _read_body(response, deadline, max_bytes)
                content_type = response.headers.get("content-type", "")
                return Fetched(body, content_type.split(";", 1)[0].strip().lower())
            finally:
                response.close()
    raise FetchError("too_many_redirects", current.host, status=hops)


def _allow_any(_addr: IPAddress, _host: str = "") -> bool:
    return True


def _redirect_target(
    current: httpx.URL, location: str, check_url: Callable[[str], httpx.URL]
) -> httpx.URL:
    """The next hop, through the same checks as the URL the person gave."""
    try:
        target = str(current.join(location))
    except (httpx.InvalidURL, ValueError):
        check_url(location)  # the caller's clearer message if it is, say, a non-http scheme
        raise FetchError("bad_redirect", current.host) from None
    return check_url(target)


@contextlib.contextmanager
def _transport_errors(host: str) -> Iterator[None]:
    """httpx's and httpcore's errors as FetchError."""
    try:
        yield
    except FetchError:
        raise
    except httpx.TimeoutException:
        raise FetchError("timeout", host) from None
    except httpx.ConnectError as exc:
        raise FetchError("tls" if caused_by(exc, ssl.SSLError) else "connect", host) from None
    except (httpx.HTTPError, OSError) as exc:
        logger.info("fetch from %s failed: %r", host, exc)
        raise FetchError("tls" if caused_by(exc, ssl.SSLError) else "broken", host) from None


def _read_body(response: httpx.Response, deadline: float, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > max_bytes:
        raise FetchError("too_large")  # no need to download it to know
    parts: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > max_bytes:  # Content-Length is a claim; the bytes are what count
            raise FetchError("too_large")
        if time.monotonic() > deadline:  # a server trickling bytes never trips a read timeout
            raise FetchError("timeout")
        parts.append(chunk)
    return b"".join(parts)


def caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def check_destination(url: httpx.URL, *, timeout: float) -> None:
    """Refuse a URL whose host resolves (now) to an address that may not be reached. The same
    check runs again on every connection: DNS may answer differently then."""
    GuardedNetworkBackend(allowed=address_policy(), deadline=time.monotonic() + timeout).check(
        url.host, url.port or _DEFAULT_PORTS.get(url.scheme, 0)
    )


@dataclass(frozen=True)
class Posted:
    status: int
    reason: str


def post(url: httpx.URL, *, body: bytes, headers: Mapping[str, str], timeout: float) -> Posted:
    """POST ``body`` to ``url`` once, SSRF-safely, within ``timeout`` seconds in all; the answer
    is read (up to 64 kB) and dropped. A redirect is an answer like any other, not followed.
    Raises FetchError for no answer (blocked, dns, timeout, tls, connect, broken)."""
    deadline = time.monotonic() + timeout
    backend = GuardedNetworkBackend(allowed=address_policy(), deadline=deadline)
    with GuardedTransport(backend) as transport, _transport_errors(url.host):
        request = httpx.Request(
            "POST",
            url,
            content=body,
            headers=headers,
            extensions={"timeout": httpx.Timeout(timeout).as_dict()},
        )
        response = transport.handle_request(request)
        try:
            _read_body(response, deadline, 64 * 1024)
        except FetchError as exc:
            if exc.kind != "too_large":  # a long answer is still an answer
                raise
        finally:
            response.close()
        return Posted(response.status_code, response.reason_phrase)
