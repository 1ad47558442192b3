"""HTTP/1.1 over a bare socket, for what clients libraries will not send: pipelined requests, bad framing."""

import socket
from dataclasses import dataclass
from typing import Dict, List


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: Dict[str, str]  # names in lower case
    body: bytes


def request_bytes(method: str, path: str, headers: Dict[str, str], body: bytes = b"") -> bytes:
    """One request with a Content-Length (when there is a body) and the given headers."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def exchange(port: int, data: bytes, count: int, timeout: float = 60.0) -> List[RawResponse]:
    """Send `data` on one connection to 127.0.0.1:`port` and read up to `count` answers, in the order they
    arrive; fewer when the server closes the connection (or resets it) first."""
    answers: List[RawResponse] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        stream = sock.makefile("rb")
        try:
            for _ in range(count):
                status_line = stream.readline()
                if not status_line:
                    break
                headers = {}
                while (line := stream.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = stream.read(int(headers.get("content-length", 0)))
                answers.append(RawResponse(int(status_line.split()[1]), headers, body))
        except ConnectionResetError:
            pass
    return answers
