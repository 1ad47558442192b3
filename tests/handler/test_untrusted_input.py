"""Round 3 of untrusted input, in process: what phones and browsers send, bounded work per image,
a bad request failing alone, bounded answers, and the request forms real clients send."""

import base64
import gzip
import json
import re
import struct
import time
import zlib

import image_formats
import jpeg_decoding
import numpy as np
import pytest
import torch
from classifier_handler import ClassifierHandler
from content_encoding import inflate
from crafted_jpegs import many_scan_jpeg
from fake_context import FakeContext
from image_decoding import decode_image
from image_variants import encode, sample
from kserve_binary import binary_request, binary_response
from request_errors import MAX_MESSAGE_CHARS, BodyTooLarge, ImageTooLarge, InvalidImage, InvalidRequest
from request_forms import HttpRequest, multipart_request, raw, urlencoded
from untrusted_images import (
    avif,
    float_rgb_tiff,
    heic,
    jpeg2000,
    jpeg_with_precision,
    lossless_jpeg,
    png_in_tiny_chunks,
    png_with_metadata,
    rotated_with_orientation,
)

CAT = sample("chelsea.png")  # 451x300
CAT_PNG = encode(CAT, "PNG")
CAT_JPEG = encode(CAT, "JPEG", quality=90)


def mean_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().mean().item()


PHONE_FORMATS = {
    "HEIC": lambda image, exif=None: heic(image, exif=exif),
    "AVIF": lambda image, exif=None: avif(image, exif=exif),
}


@pytest.mark.parametrize("name", sorted(PHONE_FORMATS))
def test_heic_and_avif_decode_upright_to_the_pngs_picture(name):
    png = decode_image(CAT_PNG)
    assert mean_difference(decode_image(PHONE_FORMATS[name](CAT)), png) < 3
    stored, exif = rotated_with_orientation(CAT)
    assert mean_difference(decode_image(PHONE_FORMATS[name](stored, exif)), png) < 3


@pytest.mark.parametrize("container", [True, False], ids=["jp2", "j2k"])
def test_jpeg2000_decodes_and_is_reduced_only_as_far_as_min_side_allows(monkeypatch, container):
    import image_decoding

    monkeypatch.setattr(image_decoding, "MAX_JPEG2000_DECODED_PIXELS", 10_000_000)
    big = CAT.resize((1804, 1200))
    data = jpeg2000(big, levels=5, container=container)
    full = decode_image(data)
    assert full.shape == (3, 1200, 1804) and mean_difference(full, torch.from_numpy(np.array(big)).permute(2, 0, 1)) < 3
    assert decode_image(data, min_side=300).shape == (3, 300, 451)  # 1/4: the short side stays >= 300
    assert decode_image(data, min_side=301).shape == (3, 600, 902)


def test_a_big_jpeg2000_decodes_at_a_level_within_the_pixel_budget(monkeypatch):
    import image_decoding

    monkeypatch.setattr(image_decoding, "MAX_JPEG2000_DECODED_PIXELS", 200_000)
    data = jpeg2000(CAT.resize((1804, 1200)), levels=5)
    assert decode_image(data, min_side=1024).shape == (3, 300, 451)  # 1/4: the first level under 200,000 pixels


def test_a_jpeg2000_that_cannot_be_reduced_is_bounded_in_decoded_pixels(monkeypatch):
    import image_decoding

    monkeypatch.setattr(image_decoding, "MAX_JPEG2000_DECODED_PIXELS", 150_000)
    with pytest.raises(ImageTooLarge, match=r"^JPEG 2000 image 902x600 \(0 resolution levels\) would decode 541200"):
        decode_image(jpeg2000(CAT.resize((902, 600)), levels=0))
    assert decode_image(jpeg2000(CAT.resize((902, 600)), levels=2), min_side=600).shape == (3, 300, 451)


def test_avif_is_limited_to_a_third_of_the_full_decode_pixels():
    """AVIF costs about three times PNG's CPU a pixel: its limit is max_full_decode_pixels / 3."""
    data = avif(CAT.resize((600, 400)))
    with pytest.raises(
        ImageTooLarge,
        match=r"^AVIF image is 600x400 = 240000 pixels; AVIF decodes at full resolution at about 3 times the cost of "
        r"PNG, and is limited to 200000 \(handler.max_full_decode_pixels / 3\): send a JPEG$",
    ):
        decode_image(data, max_full_decode_pixels=600_000)
    assert decode_image(data, max_full_decode_pixels=720_000).shape == (3, 400, 600)
    png = encode(CAT.resize((600, 400)), "PNG")
    assert decode_image(png, max_full_decode_pixels=600_000).shape == (3, 400, 600)


REFUSED = {
    "12-bit JPEG": (jpeg_with_precision(CAT_JPEG, 12), r"^12-bit JPEG is not supported \(8-bit samples only\)$"),
    "lossless JPEG": (lossless_jpeg(CAT_JPEG), r"^lossless JPEG is not supported$"),
    "float TIFF": (
        float_rgb_tiff(),
        r"^TIFF with 3 x 32-bit floating-point samples \(uncompressed\) is not supported$",
    ),
    "JPEG XL": (b"\xff\x0a\xfa\x7f\x01\x90" + bytes(40), r"^JPEG XL is not supported \(first bytes ff 0a fa 7f\)"),
    "Photoshop": (b"8BPS\x00\x01" + bytes(40), r"^Photoshop PSD is not supported"),
    "MP4 video": (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", r"^a video \(MP4/MOV\) is not supported"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_formats_are_named_never_damaged_nor_listed_as_supported(name):
    data, message = REFUSED[name]
    with pytest.raises(InvalidImage, match=message) as refused:
        decode_image(data)
    text = str(refused.value)
    assert "damaged" not in text
    if "supported:" in text:
        assert name not in [item.strip() for item in text.split("supported:")[1].split(",")]


def test_without_their_decoders_heic_and_avif_say_what_to_install(monkeypatch):
    heic_data, avif_data = heic(CAT), avif(CAT)
    import image_decoding

    for module in (image_formats, image_decoding):  # a worker without pi-heif, on Pillow 10
        monkeypatch.setattr(module, "decodable", lambda: dict(image_formats.ALWAYS))
    with pytest.raises(InvalidImage, match=r"^HEIC/HEIF needs the pi-heif package.*pip install pi-heif==1.4.0"):
        decode_image(heic_data)
    with pytest.raises(
        InvalidImage, match=r"^AVIF needs Pillow >= 11.3, whose wheels decode it; this worker has Pillow"
    ):
        decode_image(avif_data)


@pytest.mark.parametrize("after_pixels", [False, True], ids=["before the pixels", "after the pixels"])
def test_big_png_metadata_never_stops_the_pixels(after_pixels):
    data = png_with_metadata(CAT_PNG, megabytes=3, after_pixels=after_pixels)
    assert torch.equal(decode_image(data), decode_image(CAT_PNG))


def test_imagemagick_exif_in_a_png_text_chunk_still_turns_the_picture():
    stored, exif = rotated_with_orientation(CAT)
    hex_exif = b"\nexif\n" + str(len(exif) + 6).encode() + b"\n" + (b"Exif\0\0" + exif).hex().encode()
    text = b"Raw profile type exif\0\0" + zlib.compress(hex_exif)
    chunk = struct.pack(">I", len(text)) + b"zTXt" + text + struct.pack(">I", zlib.crc32(b"zTXt" + text))
    png = encode(stored, "PNG")
    data = png[:33] + chunk + png_with_metadata(png)[33:]  # and a big XMP, which is dropped
    assert torch.equal(decode_image(data), decode_image(CAT_PNG))


def test_a_png_in_too_many_chunks_is_refused_before_decoding():
    assert decode_image(png_in_tiny_chunks(CAT_PNG, 1000)).shape == (3, 300, 451)
    with pytest.raises(InvalidImage, match=r"^PNG has more than 100000 chunks"):
        decode_image(png_in_tiny_chunks(CAT_PNG, 100_001))


def test_a_jpeg_of_many_scans_is_refused_from_its_markers_in_milliseconds():
    data = many_scan_jpeg(4000, 3000)  # 883 scans: 3 s to decode here, 50 KB
    start = time.process_time()
    with pytest.raises(InvalidImage, match=r"^JPEG with 883 scans would walk 165562500 blocks to decode; the limit is"):
        decode_image(data, min_side=1024)
    assert time.process_time() - start < 1.0  # the markers are walked, no scan is decoded
    small = many_scan_jpeg(640, 480, bands=5)  # 71 scans of a small picture: within the limit
    assert decode_image(small).shape == (3, 480, 640)


def test_a_progressive_photo_sized_jpeg_is_within_the_scan_limit():
    structure = jpeg_decoding.checked_structure(encode(CAT.resize((7300, 5475)), "JPEG", progressive=True))
    assert structure.scans == 10 and structure.block_visits < jpeg_decoding.MAX_JPEG_BLOCK_VISITS / 2


def test_a_jpeg_is_decoded_once(monkeypatch):
    calls = []
    real = jpeg_decoding._simplejpeg()
    monkeypatch.setattr(
        jpeg_decoding,
        "_simplejpeg",
        lambda: type("Counting", (), {"decode_jpeg": lambda *a, **k: calls.append(1) or real.decode_jpeg(*a, **k)}),
    )
    for data in (CAT_JPEG, CAT_JPEG[:-2], CAT_JPEG[: len(CAT_JPEG) // 2]):
        calls.clear()
        try:
            decode_image(data)
        except InvalidImage:
            pass
        assert len(calls) == 1


def test_every_message_is_capped():
    error = InvalidRequest("x" * 10_000_000)
    assert len(str(error)) == MAX_MESSAGE_CHARS and str(error).endswith("... (10000000 characters)")


def make_handler(tiny_pt):
    context = FakeContext(tiny_pt.parent, tiny_pt.name, {"minWorkers": 2, "handler": {"topk": 3}})
    handler = ClassifierHandler()
    handler.initialize(context)
    return handler, context


def serve(handler, context, requests):
    answers = handler.handle(context.deliver(requests), context)
    return [(context.status(i), answer) for i, answer in enumerate(answers)]


NESTED = raw(b"[" * 100_000 + b"]" * 100_000, "application/json")
BAD_BODIES = {
    "nested arrays": NESTED,
    "nested objects": raw(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "application/json"),
    "an integer of 5000 digits": raw(b'{"data": ' + b"9" * 5000 + b"}", "application/json"),
    "a byte-order mark": raw(b"\xef\xbb\xbf" + json.dumps({"data": "aGk="}).encode(), "application/json"),
    "UTF-16 JSON": raw(json.dumps({"data": "aGk="}).encode("utf-16"), "application/json"),
    "Latin-1 JSON": raw('{"data": "caf\xe9"}'.encode("latin-1"), "application/json"),
    "truncated JSON": raw(b'{"data": "/9j/4AAQ', "application/json"),
    "a v2 body nested deep": raw(b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json"),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_a_bad_body_beside_good_ones_fails_alone_with_a_4xx(tiny_pt, name):
    handler, context = make_handler(tiny_pt)
    good = raw(CAT_JPEG)
    answers = serve(handler, context, [good, BAD_BODIES[name], good])
    assert answers[0][0] == answers[2][0] == 200 and answers[0][1] == answers[2][1]
    status, body = answers[1]
    assert 400 <= status < 500 and len(json.dumps(body)) < 2 * MAX_MESSAGE_CHARS, (status, body)


def test_a_form_of_many_fields_gets_a_short_400(tiny_pt):
    handler, context = make_handler(tiny_pt)
    form = urlencoded([(f"field{i}", "x") for i in range(20_000)])  # FakeContext frames it in O(n^2)
    [(status, body)] = serve(handler, context, [form])
    assert status == 400 and re.search(r"\.\.\. \(20000 in all\)", body["message"]) and len(body["message"]) < 1000


def test_a_file_part_without_a_filename_is_an_image(tiny_pt):
    handler, context = make_handler(tiny_pt)
    expected = serve(handler, context, [raw(CAT_JPEG)])
    # requests' files={"image": (None, data, "image/jpeg")}: TorchServe hands it over as a text field.
    part = HttpRequest(
        multipart_request([("image", "x", CAT_JPEG)]).body,
        "multipart/form-data; boundary=b",
        (("image", CAT_JPEG, ""),),
    )
    assert serve(handler, context, [part]) == expected


def test_a_multipart_body_without_a_boundary_says_so(tiny_pt):
    handler, context = make_handler(tiny_pt)
    request = multipart_request([("image", "cat.jpg", CAT_JPEG)])
    lost = HttpRequest(request.body, "multipart/form-data", (("body", request.body, "multipart/form-data"),))
    [(status, body)] = serve(handler, context, [lost])
    assert status == 400 and body["message"].startswith("the multipart/form-data Content-Type has no boundary=")


def gzipped(data: bytes, content_type: str = "application/octet-stream", coding: str = "gzip") -> HttpRequest:
    packed = gzip.compress(data) if coding == "gzip" else zlib.compress(data)
    request = raw(packed, content_type)
    return HttpRequest(request.body, request.content_type, request.parameters, (("Content-Encoding", coding),))


def test_gzip_and_deflate_bodies_are_decoded_and_a_bomb_gets_413(tiny_pt):
    handler, context = make_handler(tiny_pt)
    [expected] = serve(handler, context, [raw(CAT_JPEG)])
    as_json = json.dumps({"data": base64.b64encode(CAT_JPEG).decode()}).encode()
    bomb = gzipped(bytes(40 * 1024 * 1024))  # 40 KB of gzip, 40 MiB decoded
    answers = serve(
        handler,
        context,
        [gzipped(CAT_JPEG), gzipped(as_json, "application/json"), gzipped(CAT_JPEG, coding="deflate"), bomb],
    )
    assert answers[:3] == [expected] * 3
    assert answers[3][0] == 413 and answers[3][1]["type"] == "BodyTooLarge"
    with pytest.raises(BodyTooLarge):
        inflate(gzip.compress(bytes(2000)), "gzip", 1000)
    with pytest.raises(InvalidRequest, match="cut short"):
        inflate(gzip.compress(CAT_JPEG)[:-100], "gzip", 10**8)


def test_v2_binary_tensors_in_and_out_as_tritonclient_writes_them():
    import tritonclient.http as http

    images = http.InferInput("images", [2], "BYTES")
    images.set_data_from_numpy(np.array([CAT_JPEG, CAT_PNG], dtype=object))  # binary_data=True: the default
    outputs = [http.InferRequestedOutput("labels"), http.InferRequestedOutput("probabilities")]
    body, json_size = http.InferenceServerClient.generate_request_body([images], outputs=outputs)
    request = binary_request(body, json_size)
    assert request["inputs"][0]["data"] == [CAT_JPEG, CAT_PNG]
    response = {
        "outputs": [
            {"name": "labels", "datatype": "BYTES", "shape": [2, 1], "data": ["tabby", "cup"]},
            {"name": "probabilities", "datatype": "FP32", "shape": [2, 1], "data": [0.5, 0.25]},
        ]
    }
    payload, header_length = binary_response(response, request)
    result = http.InferenceServerClient.parse_response_body(payload, header_length=header_length)
    assert result.as_numpy("labels").tolist() == [[b"tabby"], [b"cup"]]
    assert result.as_numpy("probabilities").tolist() == [[0.5], [0.25]]
