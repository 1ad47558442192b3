"""The Open Inference Protocol's binary tensor data extension, both ways, as tritonclient speaks it.

A request (or response) body is a JSON header of `Inference-Header-Content-Length` bytes followed by
the tensors' raw data, in input (output) order; each tensor with binary data says how many bytes it
has in `parameters.binary_data_size` and carries no "data". A BYTES tensor's raw data is each element
as a 4-byte little-endian length and its bytes; an FP32 tensor's is little-endian float32s.
tritonclient's HTTP client sends inputs this way by default (`set_data_from_numpy(binary_data=True)`),
and asks for outputs this way by default (`InferRequestedOutput(name, binary_data=True)`).
"""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np
from request_errors import InvalidRequest

HEADER_LENGTH = "inference-header-content-length"


def header_length(headers: Mapping[str, Any]) -> int | None:
    """The request's Inference-Header-Content-Length, or None where it has none."""
    value = next((v for k, v in headers.items() if str(k).lower() == HEADER_LENGTH), None)
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise InvalidRequest(f"Inference-Header-Content-Length must be a byte count, got {str(value)[:40]!r}") from None


def binary_request(raw: bytes, length: int) -> Dict[str, Any]:
    """The request's JSON header, each binary input's elements put in its "data" (BYTES: a list of
    bytes). Raises InvalidRequest where the sizes do not add up or the header is not a JSON object."""
    if not 0 < length <= len(raw):
        raise InvalidRequest(f"Inference-Header-Content-Length {length} does not fit a body of {len(raw)} bytes")
    try:
        body = json.loads(raw[:length])
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InvalidRequest(f"malformed JSON header of a binary v2 request: {type(e).__name__}: {e}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the JSON header of a binary v2 request must be an object")
    pos = length
    for tensor in body.get("inputs") or []:
        size = _binary_size(tensor)
        if size is None:
            continue
        if pos + size > len(raw):
            raise InvalidRequest(f"input {tensor.get('name')!r} declares {size} binary bytes; the body has fewer")
        chunk, pos = raw[pos : pos + size], pos + size
        tensor["data"] = _bytes_elements(chunk) if tensor.get("datatype") == "BYTES" else chunk
    if pos != len(raw):
        raise InvalidRequest(f"the binary v2 body has {len(raw) - pos} bytes that no input declares")
    return body


def wants_binary(body: Mapping[str, Any], name: str) -> bool:
    """Whether output `name` is asked for as binary: its own `binary_data` parameter, else the
    request's `binary_data_output` parameter (false by default, as in Triton)."""
    for output in body.get("outputs") or []:
        if isinstance(output, dict) and output.get("name") == name:
            parameters = output.get("parameters") or {}
            if "binary_data" in parameters:
                return bool(parameters["binary_data"])
    return bool((body.get("parameters") or {}).get("binary_data_output", False))


def binary_response(response: Dict[str, Any], body: Mapping[str, Any]) -> Tuple[bytes, int] | None:
    """`response` with the outputs asked for as binary moved after its JSON header: (body, header
    length); None when no output is asked for as binary (the response stays JSON)."""
    blobs: List[bytes] = []
    for output in response["outputs"]:
        if not wants_binary(body, output["name"]):
            continue
        data = output.pop("data")
        if output["datatype"] == "BYTES":
            blob = b"".join(struct.pack("<I", len(e)) + e for e in (str(x).encode() for x in data))
        else:
            blob = np.asarray(data, dtype="<f4").tobytes()
        output.setdefault("parameters", {})["binary_data_size"] = len(blob)
        blobs.append(blob)
    if not blobs:
        return None
    header = json.dumps(response).encode()
    return header + b"".join(blobs), len(header)


def _binary_size(tensor: Any) -> int | None:
    if not isinstance(tensor, dict):
        return None
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidRequest(f"input {tensor.get('name')!r}: binary_data_size must be a byte count, got {size!r}")
    return size


def _bytes_elements(chunk: bytes) -> List[bytes]:
    elements, pos = [], 0
    while pos < len(chunk):
        if pos + 4 > len(chunk):
            raise InvalidRequest("a BYTES input's binary data ends inside an element's length")
        (size,) = struct.unpack_from("<I", chunk, pos)
        if pos + 4 + size > len(chunk):
            raise InvalidRequest("a BYTES input's element runs past its binary data")
        elements.append(chunk[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return elements
