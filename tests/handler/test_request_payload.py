import base64

import pytest
from fake_context import FakeContext
from repeated_parts import keep_repeated_parts
from request_errors import InvalidRequest, RequestError, TooManyImages
from request_forms import HttpRequest, b64, instances, json_request, multipart_request, raw, urlencoded
from request_payload import request_images

IMAGE = b"\xff\xd8\xff\xe0 pretend jpeg"
OTHER = b"\x89PNG\r\n\x1a\n pretend png"
B64 = b64(IMAGE)


def delivered(*requests):
    """What a TorchServe worker running our handler hands it, and the headers it gives with each request."""
    keep_repeated_parts()  # as ClassifierHandler.initialize does in the worker
    context = FakeContext(".", "model.pt")
    data = context.deliver(requests)
    return [(request, context.get_all_request_header(idx)) for idx, request in enumerate(data)]


def images_of(request):
    ((fields, headers),) = delivered(request)
    return request_images(fields, headers)


URL_SAFE_IMAGE = bytes(range(256)) * 3  # its base64 holds + and /, so its URL-safe form holds - and _


@pytest.mark.parametrize(
    "request_, expected",
    [
        (raw(IMAGE), IMAGE),  # --data-binary with a binary content type
        (raw(IMAGE, None), IMAGE),  # curl -T: no content type
        (raw(IMAGE, "image/jpeg"), IMAGE),
        (multipart_request([("data", "photo.jpg", IMAGE)]), IMAGE),  # -F data=@photo.jpg
        (multipart_request([("file", "photo.jpg", IMAGE)]), IMAGE),  # a file part under another name
        (multipart_request([("data", None, B64.encode())]), IMAGE),  # -F "data=<photo.b64": a text field
        (multipart_request([("data", "photo.b64", B64.encode())]), IMAGE),  # -F data=@photo.b64: base64 in a file
        (json_request({"data": B64}), IMAGE),  # application/json, parsed by TorchServe
        (json_request({"data": B64}, "application/json; charset=utf-8"), IMAGE),
        (json_request({"data": B64}, OCTET := "application/octet-stream"), IMAGE),  # JSON sent as octet-stream
        (json_request({"data": B64}, "text/plain"), IMAGE),
        (json_request({"data": {"b64": B64}}), IMAGE),
        (raw(B64.encode(), None), IMAGE),  # curl -T photo.b64
        (raw(B64.encode(), "text/plain"), IMAGE),
        (urlencoded([("data", B64)]), IMAGE),  # requests.post(url, data={"data": b64}), curl --data-urlencode
        (json_request({"data": "data:image/jpeg;base64," + B64}), IMAGE),  # a data URL
        (json_request({"data": B64.rstrip("=")}), IMAGE),  # no padding
        (json_request({"data": base64.urlsafe_b64encode(URL_SAFE_IMAGE).decode()}), URL_SAFE_IMAGE),
        (json_request({"data": base64.urlsafe_b64encode(URL_SAFE_IMAGE).decode().rstrip("=")}), URL_SAFE_IMAGE),
        (json_request({"data": base64.encodebytes(URL_SAFE_IMAGE).decode()}), URL_SAFE_IMAGE),  # wrapped at 76
        (json_request({"data": base64.encodebytes(URL_SAFE_IMAGE).decode().replace("\n", "\r\n")}), URL_SAFE_IMAGE),
    ],
)
def test_every_single_image_form_yields_the_image_bytes_and_a_single_answer(request_, expected):
    found = images_of(request_)
    assert found.images == [expected] and not found.listed


def test_the_url_safe_cases_really_use_the_url_safe_alphabet():
    text = base64.urlsafe_b64encode(URL_SAFE_IMAGE).decode()
    assert "-" in text and "_" in text and "+" not in text


def test_an_unencoded_plus_in_a_form_value_arrives_as_a_space_and_is_read_as_plus():
    text = b64(URL_SAFE_IMAGE)
    assert "+" in text
    # curl -d "data=$(base64 -w0 ...)": no URL encoding, so TorchServe's form decoder turns + into a space
    request = HttpRequest(b"", "application/x-www-form-urlencoded", (("data", text.replace("+", " ").encode(), ""),))
    assert images_of(request).images == [URL_SAFE_IMAGE]


@pytest.mark.parametrize(
    "request_",
    [
        multipart_request([("image", "a.jpg", IMAGE), ("image", "b.png", OTHER)]),  # repeated part names
        multipart_request([("data", "a.jpg", IMAGE), ("data2", "b.png", OTHER)]),
        multipart_request([("data", "a.jpg", IMAGE), ("note", None, b"hello"), ("data2", None, b64(OTHER).encode())]),
        instances([IMAGE, OTHER]),
        json_request({"instances": [{"b64": B64}, {"data": {"b64": b64(OTHER)}}]}),  # TF Serving's b64 values
        json_request({"instances": [{"image_bytes": {"b64": B64}}, b64(OTHER)]}),  # Google's, a bare string
        json_request({"data": [B64, b64(OTHER)]}),
        urlencoded([("data", B64), ("data", b64(OTHER))]),  # requests.post(url, data={"data": [a, b]})
    ],
)
def test_list_forms_yield_every_image_in_request_order_and_a_list_answer(request_):
    found = images_of(request_)
    assert found.images == [IMAGE, OTHER] and found.listed


def test_a_list_of_one_still_gets_a_list_answer():
    assert images_of(instances([IMAGE])).listed
    assert images_of(json_request({"data": [B64]})).listed


def test_a_bad_image_in_a_list_gets_its_own_error_in_its_slot():
    found = images_of(json_request({"instances": [{"data": B64}, {"data": "%%%"}, {"pixels": []}, 7, {"b64": B64}]}))
    assert found.images[0] == IMAGE and found.images[4] == IMAGE
    errors = found.images[1:4]
    assert all(isinstance(e, InvalidRequest) for e in errors)
    assert "character '%' is in no base64 alphabet" in str(errors[0])
    assert 'instance 2 has no "data" or "b64" field (keys: pixels)' in str(errors[1])
    assert "instance 3 must be" in str(errors[2])


def test_more_images_than_the_cap_get_413():
    ((fields, headers),) = delivered(instances([IMAGE] * 5))
    assert len(request_images(fields, headers, max_images=5).images) == 5
    with pytest.raises(TooManyImages, match=r"the request holds 6 images; the limit is 5 \(handler.max_images"):
        ((fields, headers),) = delivered(instances([IMAGE] * 6))
        request_images(fields, headers, max_images=5)
    assert TooManyImages.status == 413


MULTIPART = multipart_request


@pytest.mark.parametrize(
    "request_, message",
    [
        (MULTIPART([("note", None, b"hello")]), r"the multipart form has no file part \(text fields: note\)"),
        (json_request({"image": B64}), r'JSON body has no "data" or "instances" field \(keys: image\)'),
        (json_request({"data": 5}), 'JSON "data" must be a base64 string, got int'),
        (json_request({"instances": {"data": B64}}), 'JSON "instances" must be a list, got dict'),
        (json_request({"instances": []}), "the request holds no images"),
        (json_request([1, 2]), "JSON body must be an object like"),
        (raw(b'{"data": '), "malformed JSON body"),
        (raw(b'{"data": ', "application/json"), "malformed JSON body"),
        (raw(b"[1, 2]", "text/plain"), "JSON body must be an object like .*, got list"),
        (urlencoded([("note", "hello")]), r"no `data` field in the form \(fields: note\).*send the file with -T"),
        # --data-binary @photo.jpg without a content type, when TorchServe's form decoder finds no field in it
        (HttpRequest(b"\x89PNG", "application/x-www-form-urlencoded", ()), r"no `data` field in the form \(fields: no"),
    ],
)
def test_unusable_requests_raise_invalid_request(request_, message):
    ((fields, headers),) = delivered(request_)
    with pytest.raises(InvalidRequest, match=message):
        request_images(fields, headers)


@pytest.mark.parametrize(
    "text, message",
    [
        ("%%%not base64", "character '%' is in no base64 alphabet"),
        ("ab+c-d==", r"it mixes the standard \(\+/\) and URL-safe \(-_\) alphabets"),
        ("abcde", "5 characters, which no base64 text has"),
        ("ab=cd", "character '=' is in no base64 alphabet"),
        ("", "it is empty"),
    ],
)
def test_text_that_is_base64_in_no_accepted_form_is_refused(text, message):
    ((fields, headers),) = delivered(json_request({"data": text}))
    with pytest.raises(InvalidRequest, match=f"invalid base64 image data: {message}"):
        request_images(fields, headers)


def test_a_data_text_field_that_is_not_base64_fails_in_its_slot():
    found = images_of(MULTIPART([("data", None, b"hello")]))
    assert isinstance(found.images[0], RequestError) and "5 characters" in str(found.images[0])


def test_the_fake_delivers_form_values_as_torchserve_does():
    """Measured on TorchServe 0.12 (an echo handler): urlencoded values and text fields are bytearray
    with an empty part content type, file parts bytearray with theirs, JSON parsed, text/* a str."""
    ((form, form_headers),) = delivered(urlencoded([("data", B64)]))
    assert form == {"data": bytearray(B64.encode())} and form_headers["data"] == {"content-type": ""}
    assert form_headers["Content-Type"] == "application/x-www-form-urlencoded"
    ((parts, part_headers),) = delivered(MULTIPART([("data", "a.jpg", IMAGE)]))
    assert type(parts["data"]) is bytearray and part_headers["data"] == {"content-type": OCTET}
    ((body, _),) = delivered(json_request({"data": B64}, "application/json; charset=utf-8"))
    assert body == {"body": {"data": B64}}
    ((text, _),) = delivered(raw(B64.encode(), "text/plain"))
    assert text == {"body": B64}
    ((bad_json, _),) = delivered(raw(b'{"data": ', "application/json"))
    assert bad_json == {"body": bytearray(b'{"data": ')}
