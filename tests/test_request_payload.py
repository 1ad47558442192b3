import base64

import pytest
from request_errors import InvalidRequest
from request_payload import image_bytes

IMAGE = b"\xff\xd8\xff\xe0 pretend jpeg"
B64 = base64.b64encode(IMAGE).decode()


@pytest.mark.parametrize(
    "request_fields",
    [
        {"body": bytearray(IMAGE)},  # curl -T / --data-binary with a binary content type
        {"data": bytearray(IMAGE)},  # curl -F data=@photo.jpg
        {"file": bytearray(IMAGE)},  # multipart under another part name
        {"body": {"data": B64}},  # application/json, parsed by TorchServe
        {"body": bytearray(f'{{"data": "{B64}"}}'.encode())},  # JSON sent as octet-stream
        {"body": f'{{"data": "{B64}"}}'},  # JSON sent as text/plain
        {"data": B64},  # base64 text part
        {"body": {"data": "data:image/jpeg;base64," + B64}},  # a data URL
        {"body": {"data": B64[:8] + "\n" + B64[8:]}},  # wrapped base64
    ],
)
def test_every_request_form_yields_the_image_bytes(request_fields):
    assert image_bytes(request_fields) == IMAGE


def headers(content_type: str, **part_types: str) -> dict:
    """Headers as TorchServe's worker gives them: HTTP headers, plus each part's content type."""
    return {"Content-Type": content_type, **{name: {"content-type": t} for name, t in part_types.items()}}


def test_urlencoded_form_with_base64_data_is_accepted():
    assert image_bytes({"data": B64}, headers("application/x-www-form-urlencoded")) == IMAGE


def test_multipart_text_field_data_is_read_as_base64_or_json():
    form = headers("multipart/form-data; boundary=x", data="")  # curl -F data=<base64>: a text field
    assert image_bytes({"data": bytearray(B64.encode())}, form) == IMAGE
    assert image_bytes({"data": bytearray(f'{{"data": "{B64}"}}'.encode())}, form) == IMAGE


def test_multipart_file_part_under_any_name_is_the_image_and_text_fields_are_not():
    form = headers("multipart/form-data; boundary=x", note="", photo="image/jpeg")
    assert image_bytes({"note": bytearray(b"hello"), "photo": bytearray(IMAGE)}, form) == IMAGE


MULTIPART = "multipart/form-data; boundary=x"


@pytest.mark.parametrize(
    "request_fields, request_headers, message",
    [
        ({}, {}, "no image in the request: expected a body or a `data` part, got fields: none"),
        ({"name": "photo"}, {}, "got fields: name"),
        (
            {"note": bytearray(b"hello")},
            headers(MULTIPART, note=""),
            r"the multipart form has no file part \(text fields: note\); send the image as -F data=@photo.jpg",
        ),
        ({"data": bytearray(b"hello")}, headers(MULTIPART, data=""), "invalid base64 image data"),
        ({"data": bytearray(b"\xff\xd8\xff")}, headers(MULTIPART, data=""), "text field `data` is not UTF-8"),
        ({"body": {"image": B64}}, headers("application/json"), r'JSON body has no "data" field \(keys: image\)'),
        ({"body": {"data": 5}}, headers("application/json"), 'JSON "data" must be a base64 string, got int'),
        ({"body": {"data": "%%%not base64"}}, headers("application/json"), "invalid base64 image data"),
        ({"body": bytearray(b'{"data": ')}, {}, "malformed JSON body"),
        ({"body": bytearray(b'{"data"')}, headers("application/octet-stream"), "malformed JSON body"),
        ({"body": "[1, 2]"}, headers("text/plain"), "invalid base64"),
        ({"body": bytearray(b"\xff\xd8")}, headers("application/x-www-form-urlencoded"), "send the file with -T"),
    ],
)
def test_unusable_requests_raise_invalid_request(request_fields, request_headers, message):
    with pytest.raises(InvalidRequest, match=message):
        image_bytes(request_fields, request_headers)
