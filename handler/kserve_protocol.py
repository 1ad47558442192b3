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
(pytorch/serve#1302, #2158). `bypass_envelopes` turns them into pass-throughs: this module parses and
answers each request of the batch itself, and all their images are classified together.
"""

import base64
import binascii
import json
import logging
import sys
from typing import Any, Dict, List, Tuple

import torch
from handler_metrics import HandlerMetrics
from image_decoding import decode_image
from request_errors import InvalidRequest, RequestError
from request_payload import image_bytes

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


def protocol_of(request: Dict[str, Any], envelope: str | None) -> str | None:
    """"v1" or "v2" when the request's body is one; v1 only behind the kserve envelope (elsewhere
    {"instances": ...} is the handler's own multi-image form)."""
    body = request_body(request)
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


def images_of(protocol: str, body: Dict[str, Any]) -> List[bytes | RequestError]:
    """The encoded images of one request, in order; an unreadable one is its RequestError.

    Raises InvalidRequest when the request as a whole is malformed.
    """
    if protocol == "v1":
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            raise InvalidRequest('v1 "instances" must be a non-empty list of {"data": "<base64 image>"}')
        return [_instance_bytes(instance) for instance in instances]
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidRequest('v2 "inputs" must hold one BYTES input of base64 images, shape [N]')
    tensor = inputs[0]
    data, shape = tensor.get("data"), tensor.get("shape")
    if tensor.get("datatype") != "BYTES" or not isinstance(data, list):
        raise InvalidRequest(f'v2 input must have datatype BYTES and a "data" list, got {tensor.get("datatype")!r}')
    if shape not in ([len(data)], [len(data), 1]):
        raise InvalidRequest(f"v2 input shape {shape} does not match its {len(data)} data elements; use [N]")
    return [_base64_or_error(item) for item in data]


def _instance_bytes(instance: Any) -> bytes | RequestError:
    if isinstance(instance, dict):
        instance = instance.get("data", instance.get("b64"))
    return _base64_or_error(instance)


def _base64_or_error(text: Any) -> bytes | RequestError:
    if not isinstance(text, str):
        return InvalidRequest(f"expected a base64 image string, got {type(text).__name__}")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        return InvalidRequest(f"invalid base64 image data: {e}")


def classify_all(
    handler: Any, payloads: List[bytes | RequestError], metrics: HandlerMetrics, owners: List[int]
) -> List[Any]:
    """Top-k dicts (or RequestErrors) for the payloads, through the handler's decode/preprocess/classify.

    `owners[i]` is the index in TorchServe's batch of the request payload i came from.
    """
    answers: List[Any] = list(payloads)
    images, slots = [], []
    for slot, payload in enumerate(payloads):
        if isinstance(payload, RequestError):
            continue
        try:
            with metrics.decoding(owners[slot]):
                image = decode_image(payload, handler.settings.max_image_pixels, handler.decode_min_side)
            images.append(handler.model.preprocess(image.to(handler.device)))
            slots.append(slot)
        except RequestError as error:
            answers[slot] = error
    if images:
        with metrics.predicting():
            batch = torch.stack(images).contiguous(memory_format=handler.memory_format)
            top_p, top_i = handler.model.classify(batch).cpu().topk(handler.topk, dim=1)
        for row, slot in enumerate(slots):
            pairs = zip(top_i[row].tolist(), top_p[row].tolist(), strict=True)
            answers[slot] = {handler.class_names[i]: p for i, p in pairs}
    for slot, answer in enumerate(answers):
        if isinstance(answer, RequestError):
            metrics.rejected(type(answer).__name__, owners[slot])
    return answers


def handle_batch(handler: Any, data: List[Dict[str, Any]], context: Any) -> List[Any]:
    """Answer a batch in which at least one request speaks v1 or v2; the others as the handler would.

    All the batch's images are classified in one call; each request gets its own response and status.
    """
    metrics = HandlerMetrics(context)
    responses: List[Any] = [None] * len(data)
    protocol_requests: List[Tuple[int, str, Dict[str, Any], int]] = []  # idx, protocol, body, image count
    payloads: List[bytes | RequestError] = []
    owners: List[int] = []  # the request index of each payload, for the metrics
    for idx, request in enumerate(data):
        protocol = protocol_of(request, handler.kserve_envelope) or "plain"
        body = request_body(request)
        try:
            if protocol == "plain":  # one image, found as the handler finds it, answered as it answers
                images: List[bytes | RequestError] = [image_bytes(request, context.get_all_request_header(idx))]
            else:
                images = images_of(protocol, body)
        except RequestError as error:
            metrics.rejected(type(error).__name__, idx)
            refuse = handler._refuse if protocol == "plain" else _error
            responses[idx] = refuse(context, idx, error)
            continue
        protocol_requests.append((idx, protocol, body, len(images)))
        payloads.extend(images)
        owners.extend([idx] * len(images))
    answers = classify_all(handler, payloads, metrics, owners) if payloads else []
    start = 0
    for idx, protocol, body, count in protocol_requests:
        mine, start = answers[start : start + count], start + count
        if protocol == "plain":
            responses[idx] = handler._refuse(context, idx, mine[0]) if isinstance(mine[0], RequestError) else mine[0]
        elif all(isinstance(a, RequestError) for a in mine):
            responses[idx] = _error(context, idx, mine[0], prefix=f"all {count} image(s) refused; first: ")
        elif protocol == "v1":
            responses[idx] = {"predictions": [a.to_json() if isinstance(a, RequestError) else a for a in mine]}
        else:
            responses[idx] = v2_response(mine, body, context, idx, handler.topk)
    return responses


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


def _error(context: Any, idx: int, error: RequestError, prefix: str = "") -> Dict[str, str]:
    message = f"{prefix}{type(error).__name__}: {error}"
    logger.info("request %d refused: %d %s", idx, error.status, message)
    phrase = "".join(c if " " <= c <= "~" else "?" for c in message)[:200]
    context.set_response_status(error.status, phrase, idx)
    context.set_response_content_type(idx, "application/json")
    return {"error": message}
