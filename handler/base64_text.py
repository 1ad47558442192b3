"""Base64 text as clients write it, normalised to bytes: padded or not, standard or URL-safe, wrapped, data URLs."""

from __future__ import annotations

import base64
import binascii
import re

from request_errors import InvalidRequest

# "data:image/png;base64," and the like, as browsers' FileReader.readAsDataURL writes them.
DATA_URL = re.compile(r"^data:[^,]{0,200},")
# Whitespace of any kind: `base64 photo.jpg` wraps at 76 columns, Windows tools add "\r\n".
WHITESPACE = re.compile(r"\s+")
STANDARD_ONLY = frozenset("+/")
URL_SAFE_ONLY = frozenset("-_")
ALPHABET = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")


def looks_like_base64(text: bytes | str) -> bool:
    """True when `text` holds only what base64 in one of the accepted forms may hold (a data URL, too)."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text[:4096]).decode("ascii")
        except UnicodeDecodeError:
            return False
    head = DATA_URL.sub("", text[:4096], count=1)
    # Wrapped base64 breaks lines; it has no spaces or tabs, which text such as "hello world" has.
    return bool(head.strip()) and re.fullmatch(r"[A-Za-z0-9+/_=\-\r\n]*", head) is not None


def decode_base64(text: str, what: str = "image data") -> bytes:
    """Decode base64 in every form clients send; raise InvalidRequest for text that is base64 in none of them.

    Accepted: the standard alphabet (`+`, `/`) or the URL-safe one (`-`, `_`), with or without the `=`
    padding, wrapped at any column (any whitespace is ignored), optionally after a data URL prefix
    (`data:image/png;base64,`). Refused: other characters, both alphabets mixed, padding inside the
    text, and a length that no base64 text has (4n+1 characters).
    """
    body = DATA_URL.sub("", text, count=1)
    body = WHITESPACE.sub("", body)
    if not body:
        raise InvalidRequest(f"invalid base64 {what}: it is empty")
    if not ALPHABET.match(body):
        bad = next(c for c in body.rstrip("=") if not (c.isascii() and (c.isalnum() or c in "+/-_")))
        raise InvalidRequest(f"invalid base64 {what}: character {bad!r} is in no base64 alphabet")
    used = set(body)
    if used & STANDARD_ONLY and used & URL_SAFE_ONLY:
        raise InvalidRequest(f"invalid base64 {what}: it mixes the standard (+/) and URL-safe (-_) alphabets")
    unpadded = body.rstrip("=")
    if len(unpadded) % 4 == 1:
        raise InvalidRequest(f"invalid base64 {what}: {len(unpadded)} characters, which no base64 text has")
    padded = unpadded.translate(str.maketrans("-_", "+/")) + "=" * (-len(unpadded) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as e:  # unreachable after the checks above, kept as a net
        raise InvalidRequest(f"invalid base64 {what}: {e}") from None
