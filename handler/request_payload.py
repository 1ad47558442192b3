"""Find the image bytes in one TorchServe request: raw body, multipart file part, or base64 JSON."""

import base64
import binascii
import json
from typing import Any, Dict, Mapping, Set

from request_errors import InvalidRequest

# Field names tried first: `data` (TorchServe's convention, curl -F data=@...) and `body` (raw body).
PREFERRED_FIELDS = ("data", "body")


FORM_URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
FORM_HINT = (
    "; the body was sent as application/x-www-form-urlencoded (curl's default for -d/--data-binary): "
    "send the file with -T, or add -H 'Content-Type: application/octet-stream' "
    "(application/json for base64 JSON)"
)


def image_bytes(request: Dict[str, Any], headers: Mapping[str, Any] | None = None) -> bytes:
    """The encoded image carried by `request`, as TorchServe's worker hands it to the handler.

    TorchServe passes a raw body as `body` (a bytearray), each multipart part under its own name
    (as bytes, file or not), and a body sent as application/json already parsed (a dict).
    `headers` are the request's headers as the worker gives them: HTTP headers by name, and each
    part's own content type as `{part name: {"content-type": ...}}`.
    """
    headers = headers or {}
    content_type = _request_content_type(headers)
    # A urlencoded form carries an image only as data=<base64>; anything else is a mangled upload.
    if content_type.startswith(FORM_URLENCODED) and not isinstance(request.get("data"), str):
        raise InvalidRequest(f"no `data` field in the form{FORM_HINT}")
    text_fields: Set[str] = set()
    if content_type.startswith(MULTIPART):
        # `curl -F name=value` sends a text field; it arrives as bytes with an empty part content type.
        text_fields = {name for name in request if _part_content_type(headers, name) == ""}
    return _find_image_bytes(request, text_fields, content_type.startswith(MULTIPART))


def _request_content_type(headers: Mapping[str, Any]) -> str:
    return next((str(v).lower() for k, v in headers.items() if k.lower() == "content-type"), "")


def _part_content_type(headers: Mapping[str, Any], name: str) -> str | None:
    part = headers.get(name)
    return str(part.get("content-type") or "") if isinstance(part, Mapping) else None


def _find_image_bytes(request: Dict[str, Any], text_fields: Set[str], multipart: bool) -> bytes:
    for name in PREFERRED_FIELDS:
        if name in request and request[name] is not None:
            value = request[name]
            if name in text_fields and isinstance(value, (bytes, bytearray)):
                value = _text(value, name)
            return _field_bytes(value, name)
    files = [
        name for name, value in request.items() if isinstance(value, (bytes, bytearray)) and name not in text_fields
    ]
    if files:  # a multipart file part under another name
        return bytes(request[files[0]])
    fields = ", ".join(sorted(request)) or "none"
    if multipart:
        raise InvalidRequest(
            f"the multipart form has no file part (text fields: {fields}); send the image as -F data=@photo.jpg"
        )
    raise InvalidRequest(f"no image in the request: expected a body or a `data` part, got fields: {fields}")


def _text(value: bytes | bytearray, name: str) -> str:
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(
            f"text field `{name}` is not UTF-8 text; send a file part with -F {name}=@photo.jpg"
        ) from None


def _field_bytes(value: bytes | bytearray | str | Dict[str, Any] | Any, name: str) -> bytes:
    if isinstance(value, dict):
        return _from_json_object(value)
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value)
        # JSON sent without an application/json content type arrives as raw bytes.
        if value[:1] == b"{":
            return _from_json_object(_parse_json(value))
        return value
    if isinstance(value, str):  # a text part or text/* body: JSON or base64
        if value.lstrip()[:1] == "{":
            return _from_json_object(_parse_json(value.encode("utf-8")))
        return _decode_base64(value)
    raise InvalidRequest(f"field `{name}` holds {type(value).__name__}, expected an image")


def _parse_json(raw: bytes) -> Dict[str, Any]:
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidRequest(f"malformed JSON body: {e}") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest(f'JSON body must be an object like {{"data": "<base64>"}}, got {type(parsed).__name__}')
    return parsed


def _from_json_object(body: Dict[str, Any]) -> bytes:
    if "data" not in body:
        keys = ", ".join(sorted(map(str, body))) or "none"
        raise InvalidRequest(f'JSON body has no "data" field (keys: {keys}); send {{"data": "<base64 image>"}}')
    if not isinstance(body["data"], str):
        raise InvalidRequest(f'JSON "data" must be a base64 string, got {type(body["data"]).__name__}')
    return _decode_base64(body["data"])


def _decode_base64(text: str) -> bytes:
    # Tolerate data URLs ("data:image/png;base64,...") and line breaks, nothing else.
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequest(f"invalid base64 image data: {e}") from None
