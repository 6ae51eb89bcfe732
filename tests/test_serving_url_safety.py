"""The endpoint fetches a caller's URL only from public addresses, pinned, bounded in time, size and redirects."""

import ipaddress
import socket
import time

import pytest
from hypothesis import given, strategies as st

from inference_errors import FetchTimeoutError, PayloadTooLargeError, UrlRefusedError
from safe_url_fetch import (FetchLimits, allowed_networks_from_environment, fetch_image_bytes,
                            is_public_address)
from bench.loopback_servers import ImageServer

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)
QUICK = FetchLimits(connect_timeout_s=1, read_timeout_s=0.5, total_timeout_s=1.5, max_bytes=1000, max_redirects=3)


class NoConnections:
    """Fails the test if anything tries to open a TCP connection."""

    def __init__(self, monkeypatch):
        def refuse(sock, address):
            raise AssertionError(f"a connection to {address} was attempted")

        monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://localhost/", "http://127.1/", "http://2130706433/", "http://0x7f.0.0.1/",
    "http://0177.0.0.1/", "http://017700000001/", "http://0x7f000001/", "http://0.0.0.0/",
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://10.0.0.1/",
    "http://172.16.5.4/", "http://192.168.1.1/", "http://100.64.0.1/", "http://224.0.0.1/",
    "http://240.0.0.1/", "http://255.255.255.255/", "http://[::1]/", "http://[::]/",
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:169.254.169.254]/", "http://[fe80::1]/", "http://[fc00::1]/",
    "http://[ff02::1]/", "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:7f00:1::1]/", "https://127.0.0.1:8443/x",
])
def test_non_public_addresses_are_refused_before_connecting(url, monkeypatch):
    monkeypatch.delenv("IMAGE_FETCH_ALLOW_NETWORKS", raising=False)
    NoConnections(monkeypatch)
    with pytest.raises(UrlRefusedError) as raised:
        fetch_image_bytes(url)
    assert raised.value.status_code == 422


@pytest.mark.parametrize("url", ["ftp://example.com/dog.jpg", "file:///etc/passwd", "gopher://example.com/",
                                 "data:image/png;base64,AAAA", "//example.com/dog.jpg", "dog.jpg",
                                 "http://user:secret@example.com/dog.jpg", "http:///dog.jpg",
                                 "http://example.com:99999/"])
def test_only_plain_http_and_https_urls_are_fetched(url, monkeypatch):
    NoConnections(monkeypatch)
    with pytest.raises(UrlRefusedError):
        fetch_image_bytes(url)


def test_a_host_with_any_private_answer_is_refused(monkeypatch):
    NoConnections(monkeypatch)

    def resolver(host, port, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port))]

    with pytest.raises(UrlRefusedError, match="10.1.2.3"):
        fetch_image_bytes("http://mixed.example/dog.jpg", resolver=resolver, allowed_networks=())


def test_connection_goes_to_the_checked_address_with_the_urls_host_header():
    """DNS rebinding: the name is resolved once per hop, and that checked address is the one connected to."""
    answers = []

    def rebinding_resolver(host, port, **kwargs):
        address = "127.0.0.1" if not answers else "169.254.169.254"   # a second lookup would get the metadata IP
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    with ImageServer() as server:
        server.image("/dog.jpg", b"image bytes")
        data = fetch_image_bytes(f"http://images.example:{server.port}/dog.jpg", limits=QUICK,
                                 allowed_networks=LOOPBACK, resolver=rebinding_resolver)
    assert data == b"image bytes"
    assert answers == ["127.0.0.1"]
    assert server.requests == [("/dog.jpg", f"images.example:{server.port}")]


def test_loopback_needs_the_explicit_allow_list(monkeypatch):
    with ImageServer() as server:
        server.image("/dog.jpg", b"image bytes")
        monkeypatch.delenv("IMAGE_FETCH_ALLOW_NETWORKS", raising=False)
        with pytest.raises(UrlRefusedError):
            fetch_image_bytes(server.url("/dog.jpg"), limits=QUICK)
        monkeypatch.setenv("IMAGE_FETCH_ALLOW_NETWORKS", "127.0.0.1/32, ::1")
        assert fetch_image_bytes(server.url("/dog.jpg"), limits=QUICK) == b"image bytes"


def test_allow_list_is_empty_unless_set():
    assert allowed_networks_from_environment({}) == ()
    assert allowed_networks_from_environment({"IMAGE_FETCH_ALLOW_NETWORKS": ""}) == ()


def test_redirects_are_followed_up_to_three_and_each_is_checked():
    with ImageServer() as server:
        server.image("/dog.jpg", b"image bytes")
        server.redirect("/r1", "/r2", 301)
        server.redirect("/r2", server.url("/r3"), 307)
        server.redirect("/r3", "/dog.jpg", 308)
        server.redirect("/r0", "/r1")
        server.redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/")
        server.redirect("/to-file", "file:///etc/passwd")
        assert fetch_image_bytes(server.url("/r1"), limits=QUICK, allowed_networks=LOOPBACK) == b"image bytes"
        with pytest.raises(UrlRefusedError, match="more than 3 redirects"):
            fetch_image_bytes(server.url("/r0"), limits=QUICK, allowed_networks=LOOPBACK)
        with pytest.raises(UrlRefusedError, match="169.254.169.254"):
            fetch_image_bytes(server.url("/to-metadata"), limits=QUICK, allowed_networks=LOOPBACK)
        with pytest.raises(UrlRefusedError, match="http and https"):
            fetch_image_bytes(server.url("/to-file"), limits=QUICK, allowed_networks=LOOPBACK)


def test_a_server_that_never_answers_is_a_422_within_the_read_timeout():
    """A 4xx: a URL that hangs is the caller's choice, and a 5xx would count in the rollback alarm's metric."""
    with ImageServer() as server:
        started = time.monotonic()
        with pytest.raises(FetchTimeoutError) as raised:
            fetch_image_bytes(server.url("/hang/dog.jpg"), limits=QUICK, allowed_networks=LOOPBACK)
    assert (raised.value.status_code, raised.value.code) == (422, "FetchTimeout")
    assert time.monotonic() - started < 3


def test_a_trickling_server_hits_the_overall_deadline():
    def trickle(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "900")
        handler.end_headers()
        for _ in range(900):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.01)   # each byte within the read timeout, all of them far past the deadline

    with ImageServer() as server:
        server.routes["/slow.jpg"] = trickle
        limits = FetchLimits(connect_timeout_s=1, read_timeout_s=0.5, total_timeout_s=0.3, max_bytes=1000)
        with pytest.raises(FetchTimeoutError):
            fetch_image_bytes(server.url("/slow.jpg"), limits=limits, allowed_networks=LOOPBACK)


def test_size_cap_applies_to_declared_and_streamed_bodies():
    def undeclared(handler):
        handler.send_response(200)
        handler.end_headers()       # no Content-Length: read until close
        handler.wfile.write(b"x" * 5000)

    with ImageServer() as server:
        server.image("/declared.jpg", b"x" * 5000)
        server.routes["/streamed.jpg"] = undeclared
        for path in ("/declared.jpg", "/streamed.jpg"):
            with pytest.raises(PayloadTooLargeError) as raised:
                fetch_image_bytes(server.url(path), limits=QUICK, allowed_networks=LOOPBACK)
            assert raised.value.status_code == 413


def test_an_error_answer_from_the_image_server_is_a_422():
    with ImageServer() as server:
        with pytest.raises(UrlRefusedError, match="HTTP 404"):
            fetch_image_bytes(server.url("/missing.jpg"), limits=QUICK, allowed_networks=LOOPBACK)


NON_PUBLIC_V4 = st.sampled_from(["10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
                                 "192.168.0.0/16", "100.64.0.0/10", "0.0.0.0/8", "224.0.0.0/4"]).flatmap(
    lambda net: st.integers(0, ipaddress.ip_network(net).num_addresses - 1).map(
        lambda offset: ipaddress.ip_network(net)[offset]))


@given(NON_PUBLIC_V4)
def test_a_non_public_ipv4_address_stays_refused_inside_any_ipv6_form(address):
    value = int(address)
    forms = [address,
             ipaddress.IPv6Address((0xFFFF << 32) | value),                  # IPv4-mapped
             ipaddress.IPv6Address((0x2002 << 112) | (value << 80)),         # 6to4
             ipaddress.IPv6Address((0x64FF9B << 96) | value)]                # NAT64
    assert not any(is_public_address(form) for form in forms)


@given(st.integers(0, 2**32 - 1))
def test_public_ipv4_addresses_are_exactly_the_global_unicast_ones(value):
    address = ipaddress.IPv4Address(value)
    assert is_public_address(address) == (address.is_global and not address.is_multicast)


def test_image_fetch_max_bytes_is_the_one_cap_of_a_fetched_image(monkeypatch):
    """A URL's image larger than the default 10 MiB passes when IMAGE_FETCH_MAX_BYTES allows it: input_fn caps
    it no second time."""
    from inference import input_fn
    from serving_testlib import image_bytes

    large = image_bytes() + b"\0" * (11 * 1024 * 1024)     # a JPEG with padding after its end: still decodes
    monkeypatch.setenv("IMAGE_FETCH_ALLOW_NETWORKS", "127.0.0.1/32")
    with ImageServer() as server:
        server.image("/large.jpg", large)
        body = f'{{"url": "{server.url("/large.jpg")}"}}'
        with pytest.raises(PayloadTooLargeError):
            input_fn(body, "application/json")
        monkeypatch.setenv("IMAGE_FETCH_MAX_BYTES", str(12 * 1024 * 1024))
        assert input_fn(body, "application/json").image.size == (160, 120)
