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


def test_urlencoded_form_with_base64_data_is_accepted():
    assert image_bytes({"data": B64}, "application/x-www-form-urlencoded") == IMAGE


@pytest.mark.parametrize(
    "request_fields, content_type, message",
    [
        ({}, "", "no image in the request: expected a body or a `data` part, got fields: none"),
        ({"name": "photo"}, "multipart/form-data", "got fields: name"),
        ({"body": {"image": B64}}, "application/json", r'JSON body has no "data" field \(keys: image\)'),
        ({"body": {"data": 5}}, "application/json", 'JSON "data" must be a base64 string, got int'),
        ({"body": {"data": "%%%not base64"}}, "application/json", "invalid base64 image data"),
        ({"body": bytearray(b'{"data": ')}, "", "malformed JSON body"),
        ({"body": bytearray(b'{"data"')}, "application/octet-stream", "malformed JSON body"),
        ({"body": "[1, 2]"}, "text/plain", "invalid base64"),
        ({"body": bytearray(b"\xff\xd8")}, "application/x-www-form-urlencoded", "send the file with -T"),
    ],
)
def test_unusable_requests_raise_invalid_request(request_fields, content_type, message):
    with pytest.raises(InvalidRequest, match=message):
        image_bytes(request_fields, content_type)
