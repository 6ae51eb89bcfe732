"""Fetch an image by URL for the endpoint without letting a caller reach what the endpoint can reach.

The endpoint runs inside a VPC next to the instance metadata service (169.254.169.254) and private services, so a
URL is only fetched when every address its host resolves to is public. The connection then goes to that checked
address (the Host header and TLS server name stay the URL's host), so a second DNS answer cannot swap in a private
address. Redirects are followed by hand, each one checked the same way, at most `max_redirects`. Connect and read
timeouts, an overall deadline and a byte cap bound what one request can cost.

Settings (environment variables of the endpoint, all optional):
  IMAGE_FETCH_ALLOW_NETWORKS   comma-separated addresses/CIDRs fetched even though they are not public, e.g.
                               "127.0.0.1/32" for local development. Empty (the default) allows none.
  IMAGE_FETCH_CONNECT_TIMEOUT_S  seconds to connect (default 3)
  IMAGE_FETCH_READ_TIMEOUT_S     seconds a read may stall (default 10); the whole fetch gets twice that
  IMAGE_FETCH_MAX_BYTES          largest image accepted (default 10 MiB)
"""

import http.client
import ipaddress
import logging
import os
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from inference_errors import FetchTimeoutError, PayloadTooLargeError, UrlRefusedError

logger = logging.getLogger(__name__)

ALLOW_NETWORKS_ENV = "IMAGE_FETCH_ALLOW_NETWORKS"
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
USER_AGENT = "dog-breeds-endpoint/1 (+image fetch)"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    total_timeout_s: float = 20.0
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 3

    @classmethod
    def from_environment(cls, environ=None):
        env = os.environ if environ is None else environ
        read = float(env.get("IMAGE_FETCH_READ_TIMEOUT_S", cls.read_timeout_s))
        return cls(connect_timeout_s=float(env.get("IMAGE_FETCH_CONNECT_TIMEOUT_S", cls.connect_timeout_s)),
                   read_timeout_s=read, total_timeout_s=2 * read,
                   max_bytes=int(env.get("IMAGE_FETCH_MAX_BYTES", cls.max_bytes)))


def allowed_networks_from_environment(environ=None):
    """The explicit allow-list (IMAGE_FETCH_ALLOW_NETWORKS); empty unless someone set it."""
    raw = (os.environ if environ is None else environ).get(ALLOW_NETWORKS_ENV, "")
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())


def _embedded_ipv4(address):
    """IPv4 addresses an IPv6 address carries (mapped, 6to4, Teredo, NAT64): each must be public too."""
    if address.version != 6:
        return []
    found = [address.ipv4_mapped, address.sixtofour]
    if address.teredo:
        found.extend(address.teredo)
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [embedded for embedded in found if embedded is not None]


def is_public_address(address):
    """True when `address` (an ipaddress object) is a unicast address on the public internet."""
    if (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified or not address.is_global):
        return False
    return all(is_public_address(embedded) for embedded in _embedded_ipv4(address))


def check_address(address, allowed_networks=()):
    """Raise UrlRefusedError unless the address is public or explicitly allowed."""
    if any(address.version == network.version and address in network for network in allowed_networks):
        return
    if not is_public_address(address):
        raise UrlRefusedError(f"refusing to fetch from non-public address {address}")


def resolve_checked(host, port, allowed_networks=(), resolver=socket.getaddrinfo):
    """Resolve host and return (family, sockaddr) of the first address; refuse if ANY answer is not allowed."""
    try:
        answers = resolver(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as error:
        raise UrlRefusedError(f"host {host!r} does not resolve") from error
    if not answers:
        raise UrlRefusedError(f"host {host!r} does not resolve")
    for _family, _type, _proto, _canon, sockaddr in answers:
        check_address(ipaddress.ip_address(sockaddr[0].split("%", 1)[0]), allowed_networks)
    family, _type, _proto, _canon, sockaddr = answers[0]
    return family, sockaddr


def _open_socket(family, sockaddr, limits):
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(limits.connect_timeout_s)
        sock.connect(sockaddr)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(limits.read_timeout_s)
        return sock
    except BaseException:
        sock.close()
        raise


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to an address checked beforehand; Host header from the URL."""

    def __init__(self, host, port, family, sockaddr, limits):
        super().__init__(host, port, timeout=limits.read_timeout_s)
        self._pinned = (family, sockaddr, limits)

    def connect(self):
        self.sock = _open_socket(*self._pinned)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address checked beforehand; SNI and certificate check against the URL's host."""

    def __init__(self, host, port, family, sockaddr, limits):
        super().__init__(host, port, timeout=limits.read_timeout_s, context=ssl.create_default_context())
        self._pinned = (family, sockaddr, limits)

    def connect(self):
        sock = _open_socket(*self._pinned)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


def _split_url(url):
    if not isinstance(url, str) or not url:
        raise UrlRefusedError("url must be a non-empty string")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise UrlRefusedError(f"malformed url: {error}") from error
    if parts.scheme not in ("http", "https"):
        raise UrlRefusedError("only http and https urls are fetched")
    if not parts.hostname:
        raise UrlRefusedError("url has no host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefusedError("urls with credentials are not fetched")
    port = port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # A request line is ASCII: non-ASCII characters (an IRI such as .../chien-ĉ.jpg) are sent percent-encoded as
    # UTF-8, as browsers do, instead of failing with UnicodeEncodeError (a 500) in http.client.
    target = "".join(character if character.isascii() else quote(character) for character in target)
    return parts.scheme, parts.hostname, port, target


def _read_body(response, limits, deadline):
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > limits.max_bytes:
        raise PayloadTooLargeError(f"image is {int(declared)} bytes, the limit is {limits.max_bytes}")
    chunks, size = [], 0
    while True:
        if time.monotonic() > deadline:
            raise FetchTimeoutError(f"image download took longer than {limits.total_timeout_s:g} s")
        chunk = response.read1(_CHUNK)   # what has arrived: read(n) would wait for all n bytes
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limits.max_bytes:
            raise PayloadTooLargeError(f"image is larger than the limit of {limits.max_bytes} bytes")
        chunks.append(chunk)


def fetch_image_bytes(url, limits=None, allowed_networks=None, resolver=socket.getaddrinfo):
    """GET `url` safely and return its bytes. Raises the typed errors of inference_errors."""
    limits = limits or FetchLimits.from_environment()
    allowed = allowed_networks_from_environment() if allowed_networks is None else tuple(allowed_networks)
    deadline = time.monotonic() + limits.total_timeout_s
    current = url
    for hop in range(limits.max_redirects + 1):
        scheme, host, port, target = _split_url(current)
        family, sockaddr = resolve_checked(host, port, allowed, resolver)
        connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        connection = connection_class(host, port, family, sockaddr, limits)
        try:
            connection.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept": "image/*",
                                                       "Accept-Encoding": "identity"})
            response = connection.getresponse()
            if response.status in REDIRECT_STATUSES:
                location = response.getheader("Location")
                if not location:
                    raise UrlRefusedError(f"redirect {response.status} without a Location")
                current = urljoin(current, location)
                logger.info("image url redirected", extra={"hop": hop + 1, "status": response.status})
                continue
            if response.status != 200:
                raise UrlRefusedError(f"image server answered HTTP {response.status}")
            return _read_body(response, limits, deadline)
        except (socket.timeout, TimeoutError) as error:
            raise FetchTimeoutError(f"image server did not answer within the fetch timeouts ({error})") from error
        except ssl.SSLError as error:
            raise UrlRefusedError(f"TLS failed: {error.reason or error}") from error
        except (OSError, http.client.HTTPException) as error:
            raise UrlRefusedError(f"could not fetch the image: {type(error).__name__}") from error
        finally:
            connection.close()
    raise UrlRefusedError(f"more than {limits.max_redirects} redirects")
