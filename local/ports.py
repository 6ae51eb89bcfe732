"""Loopback ports for the stack's servers and the tests' and benchmarks' own."""

import socket


def free_port(host="127.0.0.1"):
    """A port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_free(host, port):
    """True when `port` on `host` can be bound now (a server of ours would get it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return True
        except OSError:
            return False
