"""Helpers of the reliability and security tests: a faked network (DNS answers and a connection guard) and the small
JSON report the tests leave in build/reliability/.

The network is the one thing these tests fake. FakeNetwork replaces the C-level getaddrinfo (which
socket.getaddrinfo, and so the endpoint's URL fetch, calls) and socket.connect: names resolve only to what a test
says, numeric hosts are parsed without any lookup, and every connection attempt is recorded. A connection to an
address outside loopback raises AssertionError instead of leaving the machine, unless the test routes that
address to a loopback server (the "public" image host of a redirect test).
"""

import _socket
import ipaddress
import json
import os
import socket
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
REPORT_DIR = REPO_ROOT / "build" / "reliability"


class FakeNetwork:
    def __init__(self, monkeypatch):
        self.dns = {"localhost": ["127.0.0.1"]}   # hostname -> addresses; what /etc/hosts says for localhost
        self.routes = {}                          # (address, port) a test pretends is public -> loopback port
        self.connections = []                     # every (address, port) something tried to connect to
        self._real_getaddrinfo = _socket.getaddrinfo
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

        def connect(sock, address):      # plain functions: they become the socket class's methods
            return real_connect(sock, self._check(address))

        def connect_ex(sock, address):
            return real_connect_ex(sock, self._check(address))

        monkeypatch.setattr(_socket, "getaddrinfo", self._getaddrinfo)
        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)

    def _getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name.lower().rstrip(".") in self.dns:
            answers = []
            for address in self.dns[name.lower().rstrip(".")]:
                ip = ipaddress.ip_address(address)
                if family not in (0, socket.AF_UNSPEC) and family != (socket.AF_INET if ip.version == 4
                                                                       else socket.AF_INET6):
                    continue
                if ip.version == 4:
                    answers.append((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port)))
                else:
                    answers.append((socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                                    (address, port, 0, 0)))
            return answers
        # Anything else only as a numeric address (inet_aton's spellings included): never a DNS query.
        try:
            return self._real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None

    def _check(self, address):
        if not isinstance(address, tuple) or len(address) < 2:   # AF_UNIX and friends: not the network
            return address
        host, port = address[0], address[1]
        self.connections.append((host, port))
        if (host, port) in self.routes:
            return ("127.0.0.1", self.routes[(host, port)])
        if not ipaddress.ip_address(host.split("%", 1)[0]).is_loopback:
            raise AssertionError(f"a connection to {host}:{port} was attempted; nothing may leave loopback")
        return address

    def outside_connections(self):
        return [(host, port) for host, port in self.connections
                if not ipaddress.ip_address(host.split("%", 1)[0]).is_loopback]


# ---------------------------------------------------------------------------------------------------- report

_REPORTS = {}   # this run's figures by report name: a concurrent run of the suite must not mix into them


def write_report(name, figures):
    """Merge `figures` into this run's build/reliability/<name>.json (docs/reliability.md quotes these files).

    The file is replaced as a whole (atomically) with what this run has gathered, so two runs at the same time
    each leave a consistent file and the last one wins.
    """
    report = _REPORTS.setdefault(name, {})
    report.update(figures)
    report["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["load_average_1_min"] = os.getloadavg()[0]
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    path = REPORT_DIR / f"{name}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path
