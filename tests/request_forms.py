"""Requests as clients send them, each with what TorchServe's frontend makes of it.

`HttpRequest.body`/`content_type` go to a real TorchServe (e2e tests); `parameters` are what its
frontend hands the worker for that body (name, value, content type: a raw body as `body` with its
MIME type, each multipart part with its own, each urlencoded field with none). FakeContext.deliver
runs them through TorchServe's own worker code, so unit tests see what a worker sees.
"""

from __future__ import annotations  # bench's image-stack limit loads it (through fake_context) on Python 3.9

import base64
import json
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple

OCTET = "application/octet-stream"


@dataclass(frozen=True)
class HttpRequest:
    body: bytes
    content_type: str | None
    parameters: Tuple[Tuple[str, bytes, str], ...]
    headers: Tuple[Tuple[str, str], ...] = ()  # further HTTP headers (Content-Encoding, ...)


def raw(data: bytes, content_type: str | None = OCTET) -> HttpRequest:
    """curl -T (no content type) or --data-binary with -H 'Content-Type: ...'."""
    mime = (content_type or "").split(";", 1)[0].strip()
    return HttpRequest(data, content_type, (("body", data, mime),))


def json_request(document: Any, content_type: str = "application/json") -> HttpRequest:
    return raw(json.dumps(document).encode(), content_type)


def multipart_request(parts: Sequence[Tuple[str, str | None, bytes]]) -> HttpRequest:
    """curl -F name=@file (a file part, filename set) or -F name=value (a text field, filename None)."""
    boundary = uuid.uuid4().hex
    body = b""
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        part_type = f"Content-Type: {OCTET}\r\n" if filename else ""
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{part_type}\r\n".encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    parameters = tuple((field, data, OCTET if filename else "") for field, filename, data in parts)
    return HttpRequest(body, f"multipart/form-data; boundary={boundary}", parameters)


def multipart(field: str, filename: str | None, data: bytes) -> Tuple[bytes, str]:
    """A multipart/form-data body with one part, and its content type; `filename=None` makes it a text field."""
    request = multipart_request([(field, filename, data)])
    return request.body, request.content_type or ""


def urlencoded(fields: Sequence[Tuple[str, str]]) -> HttpRequest:
    """What requests.post(url, data={...}) and curl --data-urlencode send; each value arrives as UTF-8 bytes."""
    body = urllib.parse.urlencode(list(fields)).encode()
    parameters = tuple((name, value.encode(), "") for name, value in fields)
    return HttpRequest(body, "application/x-www-form-urlencoded", parameters)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def base64_json(data: bytes) -> bytes:
    return json.dumps({"data": b64(data)}).encode()


def instances(images: List[bytes]) -> HttpRequest:
    """KServe v1's shape: {"instances": [{"data": <base64>}, ...]}."""
    return json_request({"instances": [{"data": b64(image)} for image in images]})
