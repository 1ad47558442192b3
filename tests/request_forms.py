"""Request bodies for tests that talk to a real TorchServe: multipart forms and base64 JSON."""

import base64
import json
import uuid
from typing import Tuple


def multipart(field: str, filename: str | None, data: bytes) -> Tuple[bytes, str]:
    """A multipart/form-data body with one part; `filename=None` makes it a text field."""
    boundary = uuid.uuid4().hex
    disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
    part_type = "Content-Type: application/octet-stream\r\n" if filename else ""
    body = (
        f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{part_type}\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def base64_json(data: bytes) -> bytes:
    return json.dumps({"data": base64.b64encode(data).decode()}).encode()
