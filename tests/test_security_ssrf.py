"""Server-side request forgery: with the allow-list off (the default), the endpoint fetches no internal address.

Every target goes through the handler's own entry point (input_fn with {"url": ...}) and must come back as a 422
UrlRefused before any connection is attempted: FakeNetwork records every connect() and fails the test on any
address outside loopback, so a regression cannot send traffic anywhere. Hostnames resolve through FakeNetwork's
DNS answers (the network is what is faked, not our code).
"""

import json

import pytest

import inference
from inference_errors import UrlRefusedError
from reliability_testlib import FakeNetwork, write_report
from bench.loopback_servers import ImageServer
from serving_testlib import image_bytes

FAKE_PUBLIC_ADDRESS = "93.184.216.34"   # documentation-style public address; routed to a loopback server below

# (case id, url, extra DNS answers) -- all refused with the allow-list off
INTERNAL_TARGETS = [
    ("loopback", "http://127.0.0.1/", {}),
    ("loopback short form 127.1", "http://127.1:8080/", {}),
    ("localhost", "http://localhost/admin", {}),
    ("ipv6 loopback", "http://[::1]/", {}),
    ("unspecified 0.0.0.0", "http://0.0.0.0:8080/", {}),
    ("unspecified as 0", "http://0/", {}),
    ("ipv6 unspecified", "http://[::]/", {}),
    ("metadata service", "http://169.254.169.254/latest/meta-data/iam/security-credentials/", {}),
    ("metadata decimal", "http://2852039166/latest/meta-data/", {}),
    ("metadata octal", "http://0251.0376.0251.0376/latest/meta-data/", {}),
    ("metadata hex", "http://0xa9fea9fe/latest/meta-data/", {}),
    ("metadata two-part", "http://169.254.43518/latest/meta-data/", {}),
    ("metadata ipv4-mapped ipv6", "http://[::ffff:169.254.169.254]/latest/meta-data/", {}),
    ("metadata ipv4-mapped ipv6 hex", "http://[::ffff:a9fe:a9fe]/latest/meta-data/", {}),
    ("metadata nat64", "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/", {}),
    ("metadata 6to4", "http://[2002:a9fe:a9fe::1]/", {}),
    ("ecs task metadata", "http://169.254.170.2/v2/credentials/", {}),
    ("ipv6 metadata service", "http://[fd00:ec2::254]/latest/meta-data/", {}),
    ("private 10/8", "http://10.0.0.1/", {}),
    ("private 10/8 top", "https://10.255.255.254/", {}),
    ("private 172.16/12", "http://172.16.0.1/", {}),
    ("private 172.16/12 top", "http://172.31.255.254/", {}),
    ("private 192.168/16", "http://192.168.1.1/", {}),
    ("carrier-grade nat 100.64/10", "http://100.64.0.1/", {}),
    ("unique local fd00::/8", "http://[fd00::1]/", {}),
    ("ipv6 link-local", "http://[fe80::1]/", {}),
    ("multicast", "http://224.0.0.1/", {}),
    ("hostname resolving to private", "http://images.internal.example/dog.jpg",
     {"images.internal.example": ["10.1.2.3"]}),
    ("hostname resolving to metadata", "http://metadata.example/latest/",
     {"metadata.example": ["169.254.169.254"]}),
    ("hostname with one private answer among public ones", "https://cdn.example/dog.jpg",
     {"cdn.example": [FAKE_PUBLIC_ADDRESS, "192.168.0.10"]}),
    ("hostname resolving to ipv6 loopback", "http://six.example/", {"six.example": ["::1"]}),
]


@pytest.fixture(scope="module")
def refused():
    """Cases refused in this run; written to build/reliability/ssrf.json for docs/reliability.md."""
    cases = []
    yield cases
    write_report("ssrf", {"internal_targets_refused": len(cases), "connections_attempted": 0, "targets": cases})


@pytest.fixture
def network(monkeypatch):
    monkeypatch.delenv("IMAGE_FETCH_ALLOW_NETWORKS", raising=False)   # the default: allow-list off
    return FakeNetwork(monkeypatch)


def refusal(url):
    """input_fn's answer to {"url": url}: the typed error it raises."""
    with pytest.raises(UrlRefusedError) as raised:
        inference.input_fn(json.dumps({"url": url}), "application/json")
    return raised.value


@pytest.mark.parametrize("url, dns", [(url, dns) for _, url, dns in INTERNAL_TARGETS],
                         ids=[case for case, _, _ in INTERNAL_TARGETS])
def test_internal_target_is_refused_before_any_connection(network, refused, url, dns):
    network.dns.update(dns)
    error = refusal(url)
    assert error.status_code == 422
    assert json.loads(error.message)["error"] == "UrlRefused"
    assert network.connections == []
    refused.append(url)


def test_public_url_that_redirects_to_the_metadata_service_is_refused_at_the_redirect(network, refused):
    with ImageServer() as public_host:
        public_host.redirect("/dog.jpg", "http://169.254.169.254/latest/meta-data/iam/security-credentials/")
        network.dns["images.example"] = [FAKE_PUBLIC_ADDRESS]
        network.routes[(FAKE_PUBLIC_ADDRESS, 80)] = public_host.port
        error = refusal("http://images.example/dog.jpg")
    assert "169.254.169.254" in json.loads(error.message)["message"]
    assert network.connections == [(FAKE_PUBLIC_ADDRESS, 80)]   # the first hop only
    assert public_host.requests == [("/dog.jpg", "images.example")]
    refused.append("http://images.example/dog.jpg -> 302 http://169.254.169.254/...")


def test_public_url_that_redirects_to_a_private_hostname_is_refused(network, refused):
    with ImageServer() as public_host:
        public_host.redirect("/dog.jpg", "http://db.internal.example:5432/", status=307)
        network.dns.update({"images.example": [FAKE_PUBLIC_ADDRESS], "db.internal.example": ["10.0.3.7"]})
        network.routes[(FAKE_PUBLIC_ADDRESS, 80)] = public_host.port
        refusal("http://images.example/dog.jpg")
    assert network.connections == [(FAKE_PUBLIC_ADDRESS, 80)]
    refused.append("http://images.example/dog.jpg -> 307 http://db.internal.example:5432/ (10.0.3.7)")


def test_public_image_host_is_fetched_so_the_refusals_are_not_blanket(network):
    with ImageServer() as public_host:
        public_host.image("/dog.jpg", image_bytes())
        network.dns["images.example"] = [FAKE_PUBLIC_ADDRESS]
        network.routes[(FAKE_PUBLIC_ADDRESS, 80)] = public_host.port
        request = inference.input_fn(json.dumps({"url": "http://images.example/dog.jpg"}), "application/json")
    assert request.image.size == (160, 120)
    assert network.connections == [(FAKE_PUBLIC_ADDRESS, 80)]


def test_the_allow_list_opens_only_what_it_names(network, monkeypatch):
    monkeypatch.setenv("IMAGE_FETCH_ALLOW_NETWORKS", "127.0.0.1/32")
    with ImageServer() as local_host:
        local_host.image("/dog.jpg", image_bytes())
        assert inference.input_fn(json.dumps({"url": local_host.url("/dog.jpg")}),
                                  "application/json").image.size == (160, 120)
        for url in ("http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://10.0.0.1/"):
            refusal(url)
    assert network.outside_connections() == []
