"""Bodies sent with `Content-Encoding: gzip` (or deflate): decoded before anything reads them, with a cap.

TorchServe's frontend hands the worker a compressed body as it came (it has no decompressor in its
pipeline), and its headers with it. Decoding stops at `max_bytes` of output, so a gzip bomb costs
at most that much memory and the time to inflate it: 413.
"""

from __future__ import annotations

import zlib
from typing import Any, Dict, Mapping

from request_errors import BodyTooLarge, InvalidRequest, UnsupportedContentEncoding

# zlib's window bits: gzip's header and trailer, or zlib's (deflate as RFC 9110 names it; some
# clients send raw deflate, which zlib's auto-detection does not cover).
WINDOW_BITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
CHUNK = 1 << 20


def content_encoding(headers: Mapping[str, Any]) -> str:
    value = next((str(v) for k, v in headers.items() if str(k).lower() == "content-encoding"), "")
    return value.strip().lower()


def decoded_body(request: Dict[str, Any], headers: Mapping[str, Any], max_bytes: int) -> Dict[str, Any]:
    """`request` with its body decoded per its Content-Encoding header; `request` itself without one.

    Raises BodyTooLarge (413) past `max_bytes` decoded, InvalidRequest for a body that is not what its
    header says, UnsupportedContentEncoding (415) for codings other than gzip and deflate.
    """
    coding = content_encoding(headers)
    if coding in ("", "identity"):
        return request
    if coding not in WINDOW_BITS:
        raise UnsupportedContentEncoding(
            f"Content-Encoding {coding!r} is not supported; send the body as it is, or gzip or deflate it"
        )
    name = "body" if "body" in request else next(iter(request), None)
    value = request.get(name) if name is not None else None
    if not isinstance(value, (bytes, bytearray)):
        # A multipart or urlencoded form: the frontend could not read it (its parts are compressed).
        raise InvalidRequest(f"a Content-Encoding: {coding} body is decoded only as a whole body, not as a form")
    decoded = dict(request)
    decoded[name] = inflate(bytes(value), coding, max_bytes)
    return decoded


def inflate(data: bytes, coding: str, max_bytes: int) -> bytes:
    """`data` decompressed, at most `max_bytes` of it (BodyTooLarge beyond); InvalidRequest when damaged."""
    inflater = zlib.decompressobj(WINDOW_BITS[coding])
    out = bytearray()
    try:
        pending = data
        while pending:
            out += inflater.decompress(pending, min(CHUNK, max_bytes + 1 - len(out)))
            if len(out) > max_bytes:
                raise BodyTooLarge(f"the {coding} body decodes to more than {max_bytes} bytes, the limit")
            pending = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error as e:
        raise InvalidRequest(f"the body is not valid {coding} data: {e}") from None
    if not inflater.eof:
        raise InvalidRequest(f"the {coding} body is cut short")
    return bytes(out)
