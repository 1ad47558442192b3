from fake_context import _request_frame, _Socket
from repeated_parts import _wrap
from request_forms import multipart_request, raw
from ts.protocol.otf_message_handler import _retrieve_inference_msg
from ts.service import Service

A, B, C = b"\xff\xd8\xff a", b"\xff\xd8\xff b", b"\xff\xd8\xff c"


def worker_batch(*requests):
    """The batch as TorchServe's worker reads it from the frontend's socket."""
    frame = b"".join(_request_frame(f"r{i}", r) for i, r in enumerate(requests)) + b"\xff\xff\xff\xff"
    return _retrieve_inference_msg(_Socket(frame))


def original():
    """TorchServe's own function, also once a handler in this process has wrapped it."""
    retrieve = Service.retrieve_data_for_inference
    return getattr(retrieve, "__wrapped__", retrieve)


def test_torchserve_alone_keeps_only_the_last_part_of_a_repeated_name():
    request = multipart_request([("image", "a.jpg", A), ("image", "b.jpg", B)])
    _, data, _ = original()(worker_batch(request))
    assert data == [{"image": bytearray(B)}]  # what the issue saw: a.jpg dropped without a word


def test_the_wrapper_keeps_every_part_in_request_order_with_its_content_type():
    parts = [("image", "a.jpg", A), ("note", None, b"hi"), ("image", "b.jpg", B), ("image", "c", C)]
    repeated = multipart_request(parts)
    plain = multipart_request([("data", "a.jpg", A), ("data2", "b.jpg", B)])
    headers, data, ids = _wrap(original())(worker_batch(repeated, plain, raw(C)))
    assert list(data[0].items()) == [("image", A), ("note", b"hi"), ("image#2", B), ("image#3", C)]
    types = headers[0].get_request_properties()
    assert types["image"] == types["image#3"] == {"content-type": "application/octet-stream"}
    assert types["note"] == {"content-type": ""}
    assert data[1] == {"data": bytearray(A), "data2": bytearray(B)} and data[2] == {"body": bytearray(C)}
    assert ids == {0: "r0", 1: "r1", 2: "r2"}
