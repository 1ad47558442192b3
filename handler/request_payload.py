"""Find the encoded images in one TorchServe request: raw body, multipart file parts, a form, or base64 JSON.

What a body is comes from its content type and its content together: TorchServe hands the handler a
raw body as `body` (a bytearray; a `str` for text/*, already-parsed JSON for exactly
application/json), each multipart part or urlencoded field under its own name (a bytearray), and
the part content types among the request headers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping

from base64_text import decode_base64, looks_like_base64
from request_errors import InvalidRequest, RequestError, TooManyImages

FORM_URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
JSON_TYPE = "application/json"
# Text fields of a multipart form or a urlencoded form that carry base64: `data`, `data2`, `data_1`, ...,
# and a repeated `data` (repeated_parts.py names the repeats `data#2`, ...).
DATA_FIELD = re.compile(r"^data[\d_-]*(#\d+)?$")
# First bytes of the formats image_decoding.py decodes: such bytes are an image, whatever else they could be.
# HEIC and AVIF (ISO base media files) have theirs at offset 4: see `looks_like_image`.
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*", b"\xff\x4f\xff\x51")
IMAGE_MAGIC += (b"\x00\x00\x00\x0cjP  \r\n\x87\n",)  # JPEG 2000's JP2 container
# Field names quoted in an error message: a form of 400,000 fields gets the first few and a count.
QUOTED_NAMES = 10
FORM_HINT = (
    "; the body was sent as application/x-www-form-urlencoded (curl's default for -d/--data-binary): "
    "send the file with -T, or add -H 'Content-Type: application/octet-stream' "
    "(application/json for base64 JSON)"
)
JSON_SHAPES = '{"data": "<base64>"}, {"data": ["<base64>", ...]} or {"instances": [{"data": "<base64>"}, ...]}'


@dataclass(frozen=True)
class RequestImages:
    """The images of one request, in request order.

    `images[i]` is the encoded image (bytes), or the RequestError that says why that one is unusable.
    `listed` is True when the request used a list form (several file parts, `"instances"`, a `"data"`
    list): the answer is then a list, even of one.
    """

    images: List[bytes | RequestError]
    listed: bool


def request_images(
    request: Dict[str, Any], headers: Mapping[str, Any] | None = None, max_images: int | None = None
) -> RequestImages:
    """The images carried by `request`. Raises InvalidRequest when the request as a whole is unusable
    (no image field, malformed JSON, a wrong JSON shape) and TooManyImages above `max_images`.

    `headers` are the request's headers as the worker gives them: HTTP headers by name, and each
    part's own content type as `{part name: {"content-type": ...}}`.
    """
    headers = headers or {}
    content_type = _request_content_type(headers)
    if content_type == MULTIPART:
        if "boundary=" not in _header(headers, "content-type").lower():
            raise InvalidRequest(
                "the multipart/form-data Content-Type has no boundary= parameter, so its parts cannot be found: "
                "do not set the Content-Type header by hand for FormData (fetch, axios) or -F (curl); the client "
                "writes it, boundary included"
            )
        found = _multipart_images(request, headers)
    elif content_type == FORM_URLENCODED:
        found = _form_images(request)
    elif "body" in request:
        found = _body_images(request["body"], content_type)
    else:  # a handler called without TorchServe's naming: take the `data` field, else any field
        name = next((n for n in request if DATA_FIELD.match(n)), next(iter(request), None))
        if name is None:
            raise InvalidRequest("no image in the request: expected a body or a `data` part, got fields: none")
        found = _body_images(request[name], "")
    return counted(found, max_images)


def counted(found: RequestImages, max_images: int | None) -> RequestImages:
    """`found`, once it holds at least one image and at most `max_images` (InvalidRequest, TooManyImages)."""
    if not found.images:
        raise InvalidRequest(f"the request holds no images; send one, or a list like {JSON_SHAPES}")
    if max_images is not None and len(found.images) > max_images:
        raise TooManyImages(
            f"the request holds {len(found.images)} images; the limit is {max_images} "
            "(handler.max_images_per_request): send them in several requests"
        )
    return found


def looks_like_image(raw: bytes) -> bool:
    """True for the first bytes of a format image_decoding.py decodes (HEIC/AVIF: an `ftyp` box)."""
    return raw.startswith(IMAGE_MAGIC) or raw[4:8] == b"ftyp"


def _header(headers: Mapping[str, Any], name: str) -> str:
    return next((str(v) for k, v in headers.items() if str(k).lower() == name), "")


def _request_content_type(headers: Mapping[str, Any]) -> str:
    return _header(headers, "content-type").split(";", 1)[0].strip().lower()


def _names(fields: Any) -> str:
    """Up to QUOTED_NAMES field names, and how many there are beyond them."""
    names = [str(n)[:40] for n, _ in zip(fields, range(QUOTED_NAMES + 1))]
    count = len(fields)
    shown = ", ".join(sorted(names[:QUOTED_NAMES])) or "none"
    return shown if count <= QUOTED_NAMES else f"{shown}, ... ({count} in all)"


def _part_content_type(headers: Mapping[str, Any], name: str) -> str:
    part = headers.get(name)
    return str(part.get("content-type") or "") if isinstance(part, Mapping) else ""


def _multipart_images(request: Dict[str, Any], headers: Mapping[str, Any]) -> RequestImages:
    """Every file part is an image (raw bytes, or base64 or JSON text); text fields only when named data*
    or when their bytes are an image's: a part without a filename (RFC 7578 makes it optional; requests'
    `files={"image": (None, data)}`, curl's `-F "image=<photo.jpg"`) reaches the worker as a text field."""
    images: List[bytes | RequestError] = []
    for name, value in request.items():
        is_file = _part_content_type(headers, name) != "" or (
            isinstance(value, (bytes, bytearray)) and looks_like_image(bytes(value[:16]))
        )
        if not is_file and not DATA_FIELD.match(name):
            continue  # `curl -F note=hello`: a text field that is not an image
        found = _slot(_value_images, value, name, is_file)
        images.extend(found.images)
    if not images:
        raise InvalidRequest(
            f"the multipart form has no file part (text fields: {_names(request)}); "
            "send the image as -F data=@photo.jpg"
        )
    return RequestImages(images, listed=len(images) > 1)


def _form_images(request: Dict[str, Any]) -> RequestImages:
    """A urlencoded form carries images only as data=<base64>, data2=<base64>, ..."""
    names = [name for name in request if DATA_FIELD.match(name)]
    if not names:
        raise InvalidRequest(f"no `data` field in the form (fields: {_names(request)}){FORM_HINT}")
    images: List[bytes | RequestError] = []
    for name in names:
        images.append(slot_bytes(_form_value_bytes, request[name], name))
    return RequestImages(images, listed=len(images) > 1)


def _body_images(value: Any, content_type: str) -> RequestImages:
    if isinstance(value, (dict, list)):  # application/json, parsed by TorchServe
        return _json_images(value)
    if isinstance(value, (bytes, bytearray)) and content_type == JSON_TYPE:
        _parse_json(bytes(value))  # TorchServe could not parse it: say why
    return _value_images(value, "body", True)


def _value_images(value: Any, name: str, is_file: bool) -> RequestImages:
    """One field's images, decided by its content: image bytes, JSON text, or base64 text."""
    if isinstance(value, (dict, list)):
        return _json_images(value)
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray)):
        raise InvalidRequest(f"field `{name}` holds {type(value).__name__}, expected an image")
    raw = bytes(value)
    if looks_like_image(raw[:16]):
        return RequestImages([raw], listed=False)
    stripped = raw.lstrip()
    if stripped[:1] in (b"{", b"["):
        return _json_images(_parse_json(stripped))
    if not is_file:  # a text field named data*: base64, or nothing usable
        return RequestImages([decode_base64(_text(raw, name))], listed=False)
    if looks_like_base64(stripped):  # a file or body of base64 text (`-T photo.b64`), if it decodes to an image
        decoded = slot_bytes(decode_base64, stripped.decode("ascii", "replace"))
        if isinstance(decoded, bytes) and looks_like_image(decoded[:16]):
            return RequestImages([decoded], listed=False)
    return RequestImages([raw], listed=False)  # not an image we know: image_decoding says what it is


def _json_images(body: Any) -> RequestImages:
    if not isinstance(body, dict):
        raise InvalidRequest(f"JSON body must be an object like {JSON_SHAPES}, got {type(body).__name__}")
    if "instances" in body:
        return RequestImages(instance_images(body["instances"]), listed=True)
    if "data" not in body:
        raise InvalidRequest(f'JSON body has no "data" or "instances" field (keys: {_names(body)}); send {JSON_SHAPES}')
    data = body["data"]
    if isinstance(data, list):
        return RequestImages(base64_images(data, '"data"'), listed=True)
    return RequestImages([_b64_value(data, '"data"')], listed=False)


def instance_images(instances: Any) -> List[bytes | RequestError]:
    """A JSON "instances" list (KServe v1's shape, also this handler's own): each image's bytes, or the
    error that takes its slot. Raises InvalidRequest when `instances` is not a list."""
    if not isinstance(instances, list):
        raise InvalidRequest(f'JSON "instances" must be a list, got {type(instances).__name__}')
    return [slot_bytes(_instance_bytes, x, i) for i, x in enumerate(instances)]


def base64_images(items: List[Any], what: str) -> List[bytes | RequestError]:
    """A list of base64 strings (or {"b64": ...}): each image's bytes, or the error that takes its slot."""
    return [slot_bytes(_b64_value, v, f"{what} item {i}") for i, v in enumerate(items)]


def _instance_bytes(instance: Any, index: int) -> bytes:
    """KServe v1's {"data": ...}, TF Serving's {"b64": ...}, Google's {"image_bytes": {"b64": ...}}, or a string."""
    what = f"instance {index}"
    if isinstance(instance, dict) and "data" in instance:
        return _b64_value(instance["data"], f'{what} "data"')
    if isinstance(instance, dict) and "b64" not in instance and len(instance) == 1:
        ((key, value),) = instance.items()
        if isinstance(value, dict) and "b64" in value:
            return _b64_value(value, f'{what} "{key}"')
    if isinstance(instance, (str, dict)):
        return _b64_value(instance, what)
    expected = '{"data": "<base64>"} or {"b64": "<base64>"}'
    raise InvalidRequest(f"{what} must be {expected}, got {type(instance).__name__}")


def _b64_value(value: Any, what: str) -> bytes:
    if isinstance(value, dict) and set(value) == {"b64"}:
        value = value["b64"]
    if isinstance(value, dict):
        raise InvalidRequest(f'{what} has no "data" or "b64" field (keys: {_names(value)})')
    if not isinstance(value, str):
        raise InvalidRequest(f"JSON {what} must be a base64 string, got {type(value).__name__}")
    return decode_base64(value)


def _form_value_bytes(value: Any, name: str) -> bytes:
    # An unencoded `+` in a form value arrives as a space; base64 has no spaces, so turn them back.
    return decode_base64(_text(value, name).replace(" ", "+"))


def _slot(find: Callable[..., RequestImages], *args: Any) -> RequestImages:
    """One field's images, or its error in their one slot: a bad field fails alone."""
    try:
        return find(*args)
    except RequestError as error:
        return RequestImages([error], listed=False)


def slot_bytes(find: Callable[..., bytes], *args: Any) -> bytes | RequestError:
    """One image's bytes, or the error that takes its slot."""
    try:
        return find(*args)
    except RequestError as error:
        return error


def _text(value: bytes | bytearray | str, name: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"field `{name}` is not UTF-8 text; send a file part with -F {name}=@photo.jpg") from None


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidRequest("malformed JSON body: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise InvalidRequest(f"malformed JSON body: {e}") from None
