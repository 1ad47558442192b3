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
from typing import Any, Dict, List

from request_errors import InvalidRequest, RequestError, status_phrase
from request_payload import RequestImages, base64_images, counted, instance_images

logger = logging.getLogger(__name__)

ENVELOPE_MODULES = {
    "ts.torch_handler.request_envelope.kserve": "v1",
    "ts.torch_handler.request_envelope.kservev2": "v2",
}
LABELS, PROBABILITIES, ERRORS = "labels", "probabilities", "errors"


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


def request_body(request: Dict[str, Any]) -> Any:
    """The JSON body as TorchServe hands it over: parsed already (application/json) or as bytes."""
    body = request.get("body", request.get("data"))
    if isinstance(body, (bytes, bytearray)) and body[:1] == b"{":
        try:
            return json.loads(bytes(body))
        except (UnicodeDecodeError, json.JSONDecodeError):
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
    return counted(RequestImages(base64_images(data, "v2 data"), listed=True), max_images)


def respond(protocol: str, answers: List[Any], body: Dict[str, Any], context: Any, idx: int, k: int) -> Any:
    """The response to request `idx` of the batch: v1's predictions or v2's outputs (see the module doc);
    an error with its status when every image was refused."""
    context.set_response_content_type(idx, "application/json")
    if all(isinstance(a, RequestError) for a in answers):
        return refuse(context, idx, answers[0], prefix=f"all {len(answers)} image(s) refused; first: ")
    if protocol == "v1":
        return {"predictions": [a.to_json() if isinstance(a, RequestError) else a for a in answers]}
    return v2_response(answers, body, context, idx, k)


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
    request_id = body.get("id") if isinstance(body.get("id"), str) else None
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
