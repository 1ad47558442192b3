"""The five ports a TorchServe listens on: read them from its settings, choose others, check they are free."""

import errno
import socket
from typing import Dict, List, Sequence, Tuple
from urllib.parse import urlsplit

from ..errors import ServeError

# The settings that name a listening address, in the order `--ports BASE` numbers them (BASE, BASE+1, ...).
# TorchServe starts its gRPC APIs too, on 7070 and 7071 unless told otherwise.
URL_SETTINGS = ("inference_address", "management_address", "metrics_address")
GRPC_SETTINGS = (
    ("grpc_inference_address", "grpc_inference_port", 7070),
    ("grpc_management_address", "grpc_management_port", 7071),
)
PORT_COUNT = len(URL_SETTINGS) + len(GRPC_SETTINGS)


def listening(properties: Dict[str, str]) -> List[Tuple[str, str, int]]:
    """(setting, host, port) of each API the settings make TorchServe listen on."""
    found = []
    for name in URL_SETTINGS:
        url = urlsplit(properties.get(name, ""))
        if url.hostname is None or url.port is None:
            raise ServeError(
                f"{name} must be a URL with a host and a port (http://127.0.0.1:8080), got {url.geturl()!r}"
            )
        found.append((name, url.hostname, url.port))
    for address, port, default in GRPC_SETTINGS:
        found.append((port, properties.get(address, "127.0.0.1"), int(properties.get(port, default))))
    return found


def with_ports(properties: Dict[str, str], ports: Sequence[int]) -> Dict[str, str]:
    """The settings with the five listening ports replaced (hosts and schemes kept), in URL_SETTINGS then
    gRPC order."""
    if len(ports) != PORT_COUNT:
        raise ValueError(f"expected {PORT_COUNT} ports, got {len(ports)}")
    changed = dict(properties)
    for name, port in zip(URL_SETTINGS, ports[: len(URL_SETTINGS)], strict=True):
        url = urlsplit(properties.get(name, "http://127.0.0.1:0"))
        host = f"[{url.hostname}]" if url.hostname and ":" in url.hostname else url.hostname or "127.0.0.1"
        changed[name] = url._replace(netloc=f"{host}:{port}").geturl()
    for (_, setting, _), port in zip(GRPC_SETTINGS, ports[len(URL_SETTINGS) :], strict=True):
        changed[setting] = str(port)
    return changed


def ports_from(base: int) -> List[int]:
    """`--ports BASE`: BASE for inference, BASE+1 management, BASE+2 metrics, BASE+3 and +4 gRPC."""
    if not 1 <= base <= 65535 - PORT_COUNT + 1:
        raise ServeError(f"--ports {base}: choose a base port from 1 to {65535 - PORT_COUNT + 1}")
    return [base + i for i in range(PORT_COUNT)]


def check_free(properties: Dict[str, str]) -> None:
    """Raise ServeError naming the first port that another program holds (or that cannot be bound)."""
    for setting, host, port in listening(properties):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As servers bind: a port left in TIME_WAIT by a stopped server counts as free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as e:
                taken = e.errno == errno.EADDRINUSE
                why = "is taken by another program" if taken else f"cannot be bound ({e.strerror})"
                raise ServeError(
                    f"port {port} ({setting}, {host}) {why}; serve on others with --ports BASE or --ports auto"
                ) from None
