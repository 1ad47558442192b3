"""KServe v1 and Open Inference Protocol (v2) requests: their images in, their responses out, batch-safe.

v1 (TS_SERVICE_ENVELOPE=kserve):
    {"instances": [{"data": <b64>} | {"b64": <b64>} | <b64>, ...]}  ->  {"predictions": [<top-k>, ...]}
    A bad image gets its error object ({"code", "type", "message"}) in its slot.
v2 (TS_SERVICE_ENVELOPE=kservev2, or any TorchServe's /v2/models/<name>/infer):
    {"id"?, "inputs": [{"name", "shape": [N], "datatype": "BYTES", "data": [<b64>, ...]}]}
    -> {"model_name", "model_version", "id", "outputs": [
          {"name": "labels", "datatype": "BYTES", "shape": [N, k], "data": [str, ...]},
          {"name": "probabilities", "datatype": "FP32", "shape": [N, k], "data": [float, ...]},
          {"name": "errors", "datatype": "BYTES", "shape": [N], "data": ["" | message, ...]}]}
    Rows are in request order, each most likely first; a bad image's row has "" labels and 0.0
    probabilities and its message in `errors`.
v1 :explain (/v1/models/<name>:explain, the same request):
    -> {"predictions": [<top-k>, ...], "explanations": [{"label", "probability", "attributions"}, ...]}
    as KServe's v1 protocol answers explain; a bad image has its error object in both slots. v2 defines
    no explain: the handler refuses it.
A request that is not a protocol request at all, or whose every image is bad, gets an HTTP error
with {"error": message}.

TorchServe's kserve/kservev2 envelopes read only the first request of a batch and answer one
response for the whole batch, so batchSize > 1 fails with "number of batch response mismatched"
(pytorch/serve#1302, #2158). `bypass_envelopes` turns them into pass-throughs: the handler finds each
request's images here (`request_images`), classifies the images of the whole batch together, and
answers each request here (`respond`, `refuse`).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Dict, List, Mapping

from kserve_binary import binary_request, binary_response, header_length
from request_errors import InvalidRequest, RequestError, status_phrase
from request_payload import RequestImages, base64_images, counted, instance_images, looks_like_image, slot_bytes

logger = logging.getLogger(__name__)

ENVELOPE_MODULES = {
    "ts.torch_handler.request_envelope.kserve": "v1",
    "ts.torch_handler.request_envelope.kservev2": "v2",
}
LABELS, PROBABILITIES, ERRORS = "labels", "probabilities", "errors"
MAX_ID_CHARS = 256  # a request "id" longer than this is not echoed: the answer stays small


def bypass_envelopes() -> str | None:
    """Make the KServe envelope TorchServe loaded for this worker pass the batch through unchanged.

    The worker imports the envelope module only when TS_SERVICE_ENVELOPE names it, before the
    handler's initialize(). Returns "v1" or "v2" for the envelope found, None when there is none.
    """
    for name, protocol in ENVELOPE_MODULES.items():
        module = sys.modules.get(name)
        if module is None:
            continue
        for cls in vars(module).values():
            if isinstance(cls, type) and cls.__module__ == name and hasattr(cls, "parse_input"):
                # The worker bound the envelope's handle() already; it calls these two at each batch.
                cls.parse_input = _unchanged
                cls.format_output = _unchanged
        return protocol
    return None


def _unchanged(envelope: Any, data: List[Any]) -> List[Any]:
    return data


def protocol_of(body: Any, envelope: str | None) -> str | None:
    """ "v1" or "v2" when a request's body (as `request_body` gives it) is one; v1 only behind the kserve
    envelope (elsewhere {"instances": ...} is the handler's own multi-image form, answered as a list)."""
    if isinstance(body, dict):
        if "inputs" in body:
            return "v2"
        if "instances" in body and envelope == "v1":
            return "v1"
    return None


def request_body(request: Dict[str, Any], headers: Mapping[str, Any] | None = None) -> Any:
    """The JSON body as TorchServe hands it over: parsed already (application/json) or as bytes, or a
    binary v2 request (kserve_binary.py) with its binary inputs in place. A body that is not JSON
    (too deep, huge numbers, not UTF-8) is left as it is: the handler's forms say what is wrong."""
    body = request.get("body", request.get("data"))
    length = header_length(headers or {})
    if length is not None and isinstance(body, (bytes, bytearray)):
        return binary_request(bytes(body), length)
    if isinstance(body, (bytes, bytearray)) and body[:1] == b"{":
        try:
            return json.loads(bytes(body))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
    return body


def request_images(protocol: str, body: Dict[str, Any], max_images: int | None) -> RequestImages:
    """The encoded images of one v1 or v2 request, in order; an unusable one is its RequestError.

    Raises InvalidRequest when the request as a whole is malformed, TooManyImages above `max_images`.
    """
    if protocol == "v1":
        return counted(RequestImages(instance_images(body.get("instances")), listed=True), max_images)
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidRequest('v2 "inputs" must hold one BYTES input of base64 images, shape [N]')
    tensor = inputs[0]
    data, shape = tensor.get("data"), tensor.get("shape")
    if tensor.get("datatype") != "BYTES" or not isinstance(data, list):
        raise InvalidRequest(f'v2 input must have datatype BYTES and a "data" list, got {tensor.get("datatype")!r}')
    if shape not in ([len(data)], [len(data), 1]):
        raise InvalidRequest(f"v2 input shape {shape} does not match its {len(data)} data elements; use [N]")
    images = [slot_bytes(_v2_element, v, i) for i, v in enumerate(data)]
    return counted(RequestImages(images, listed=True), max_images)


def _v2_element(value: Any, index: int) -> bytes:
    """One element of the BYTES input: base64 text (JSON), or from binary data the image's own bytes
    (or its base64)."""
    if isinstance(value, (bytes, bytearray)):
        if looks_like_image(bytes(value[:16])):
            return bytes(value)
        value = bytes(value).decode("ascii", "replace")
    (image,) = base64_images([value], "v2 data")
    if isinstance(image, RequestError):
        raise image
    return image


def respond(protocol: str, answers: List[Any], body: Dict[str, Any], context: Any, idx: int, k: int) -> Any:
    """The response to request `idx` of the batch: v1's predictions or v2's outputs (see the module doc);
    an error with its status when every image was refused."""
    context.set_response_content_type(idx, "application/json")
    if all(isinstance(a, RequestError) for a in answers):
        return refuse(context, idx, answers[0], prefix=f"all {len(answers)} image(s) refused; first: ")
    if protocol == "v1":
        return {"predictions": [a.to_json() if isinstance(a, RequestError) else a for a in answers]}
    response = v2_response(answers, body, context, idx, k)
    binary = binary_response(response, body)
    if binary is None:
        return response
    payload, length = binary
    context.set_response_content_type(idx, "application/octet-stream")
    context.set_response_header(idx, "Inference-Header-Content-Length", str(length))
    return payload


def respond_explanations(answers: List[Any], context: Any, idx: int) -> Any:
    """The v1 :explain response to request `idx`: each answer is (top-k, explanation) or a RequestError."""
    context.set_response_content_type(idx, "application/json")
    if all(isinstance(a, RequestError) for a in answers):
        return refuse(context, idx, answers[0], prefix=f"all {len(answers)} image(s) refused; first: ")
    slots = [(a.to_json(), a.to_json()) if isinstance(a, RequestError) else a for a in answers]
    return {"predictions": [p for p, _ in slots], "explanations": [e for _, e in slots]}


def v2_response(answers: List[Any], body: Dict[str, Any], context: Any, idx: int, k: int) -> Dict[str, Any]:
    """The v2 response for one request: labels and probabilities [N, k], errors [N] (see the module doc)."""
    labels: List[str] = []
    probabilities: List[float] = []
    errors: List[str] = []
    for answer in answers:
        if isinstance(answer, RequestError):
            labels += [""] * k
            probabilities += [0.0] * k
            errors.append(f"{type(answer).__name__}: {answer}")
        else:
            labels += list(answer)
            probabilities += list(answer.values())
            errors.append("")
    n = len(answers)
    outputs = [
        {"name": LABELS, "datatype": "BYTES", "shape": [n, k], "data": labels},
        {"name": PROBABILITIES, "datatype": "FP32", "shape": [n, k], "data": probabilities},
        {"name": ERRORS, "datatype": "BYTES", "shape": [n], "data": errors},
    ]
    requested = body.get("outputs")
    if isinstance(requested, list) and requested:  # only the outputs asked for, as the protocol says
        names = {r.get("name") for r in requested if isinstance(r, dict)}
        outputs = [o for o in outputs if o["name"] in names]
    model = context.manifest["model"]
    request_id = body.get("id") if isinstance(body.get("id"), str) and len(body["id"]) <= MAX_ID_CHARS else None
    return {
        "model_name": model["modelName"],
        "model_version": model.get("modelVersion", ""),
        "id": request_id or context.get_request_id(idx),
        "outputs": outputs,
    }


def refuse(context: Any, idx: int, error: RequestError, prefix: str = "") -> Dict[str, str]:
    """Request `idx` refused as a whole: its status, and KServe's {"error": message} body."""
    message = f"{prefix}{type(error).__name__}: {error}"
    logger.info("request %d refused: %d %s", idx, error.status, message)
    context.set_response_status(error.status, status_phrase(message), idx)
    context.set_response_content_type(idx, "application/json")
    return {"error": message}
