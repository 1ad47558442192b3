"""TorchServe handler: decode request images, classify them with the scripted Predictor, answer top-k."""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any, Dict, List, Sequence, Tuple

import kserve_protocol
import torch
from classify_runtime import ONNX_FILE, ONNXRUNTIME, TORCHSCRIPT, Classify, load_classify
from content_encoding import decoded_body
from explanations import Explainer, check_explainable, check_explanation_count, explanation, requested_target
from handler_metrics import HandlerMetrics
from handler_settings import INT8, HandlerSettings
from image_decoding import decode_image
from malloc_tuning import keep_freed_buffers
from repeated_parts import keep_repeated_parts
from request_errors import ExplanationFailed, InvalidImage, InvalidRequest, RequestError, status_phrase
from request_payload import RequestImages, request_images

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
# A list request where some images were refused: each slot of the answer has its own code.
PARTLY_REFUSED = 207
# Warm-up before the first request: an image of this size through preprocess, then classify at each
# batch size the worker will use, this many times (TorchScript's profiling executor optimizes a graph
# on its second call, oneDNN fusion on the third: 0.3-0.6 s in all).
WARM_UP_IMAGE_SIZE = (3, 320, 320)
WARM_UP_CALLS = 3
# The header TorchServe's frontend adds to /explanations/<model> and KServe's :explain requests.
EXPLAIN_HEADER = "explain"
TopK = Dict[str, float]


class ClassifierHandler:
    """Loads the exported .pt once; all preprocessing and the output head (softmax or sigmoid) live inside it.
    `classify` runs in the archive's runtime: the .pt itself, or its export classify.onnx in ONNX Runtime."""

    def __init__(self) -> None:
        self.model: torch.jit.ScriptModule | None = None
        self.classify: Classify | None = None
        self.device = torch.device("cpu")
        self.settings = HandlerSettings()
        self.class_names: List[str] = []
        self.topk = 1
        self.decode_min_side: int | None = None
        self.kserve_envelope: str | None = None  # "v1"/"v2" when TorchServe runs behind KServe's envelope
        self.explainer: Explainer | None = None  # None when handler.explanations is off
        self.initialized = False

    def initialize(self, context: Any) -> None:
        properties = context.system_properties
        model_config = getattr(context, "model_yaml_config", None) or {}
        self.settings = HandlerSettings.from_model_config(model_config)
        keep_repeated_parts()  # -F image=@a.jpg -F image=@b.jpg: TorchServe would keep only b.jpg
        malloc = keep_freed_buffers() if self.settings.keep_freed_buffers else "malloc: left as it is"
        threads = self.settings.torch_threads(int(model_config.get("minWorkers", 1)))
        torch.set_num_threads(threads)
        gpu_id = properties.get("gpu_id")
        if gpu_id is not None and torch.cuda.is_available():
            self.device = torch.device(f"cuda:{gpu_id}")
        model_dir = properties["model_dir"]
        model_path = os.path.join(model_dir, context.manifest["model"]["serializedFile"])
        warm_up_s = self._load_classifier(model_dir, model_path, threads)
        self.class_names = list(self.model.class_names)
        self.topk = min(self.settings.topk, len(self.class_names))
        factor = self.settings.jpeg_draft_factor
        self.decode_min_side = factor * int(self.model.resize_size) if factor else None
        self.kserve_envelope = kserve_protocol.bypass_envelopes()
        if self.settings.explanations:  # loads its own copy of the .pt on the first explanation
            self.explainer = Explainer(model_path, self.device)
        self.initialized = True
        logger.info(
            "loaded %s: %d classes, top-%d, classify in %s%s%s, %d threads, device %s, warm-up %.2f s; %s",
            model_path,
            len(self.class_names),
            self.topk,
            self.classify.name,
            " with oneDNN fusion" if self.classify.onednn_fusion else "",
            self._precision_description(),
            threads,
            self.device,
            warm_up_s,
            malloc,
        )

    def _precision_description(self) -> str:
        """What the build measured of an int8 classify.onnx, or that the worker runs fp32 instead of it."""
        settings = self.settings
        if settings.precision != INT8:
            return ""
        if self.classify is None or self.classify.name != ONNXRUNTIME:
            return ", fp32 (the archive's int8 classify.onnx cannot run here: see the warning above)"
        return (
            f", int8 calibrated on {settings.calibration_photos} photos, top-1 agreement with fp32 "
            f"{settings.held_out_agreement_top1:.4f} on {settings.held_out_photos} held-out photos"
        )

    def _load_classifier(self, model_dir: str, model_path: str, threads: int) -> float:
        """Load the .pt and the runtime that classifies, and warm them up; returns the warm-up's seconds.

        What fails in the warm-up falls back, with one warning: ONNX Runtime to the .pt, and a network
        that oneDNN's fuser cannot run to a fresh copy of the .pt (whose graphs were never fused) without it.
        """
        memory_format = torch.channels_last if self.settings.channels_last else torch.contiguous_format
        # oneDNN's graph fuser is meant for frozen graphs (on an unfrozen Predictor it fails).
        fusion = self.settings.onednn_fusion and self.settings.freeze
        runtime = self.settings.runtime
        while True:
            self.model = self._load(model_path)
            self.classify = load_classify(runtime, model_dir, self.model, self.device, threads, memory_format, fusion)
            try:
                return self._warm_up()
            except RuntimeError as e:
                if self.classify.name == ONNXRUNTIME:
                    logger.warning(
                        "runtime onnxruntime unavailable: %s failed its warm-up (%s); classifying with the .pt "
                        "(TorchScript)",
                        ONNX_FILE,
                        str(e)[:200],
                    )
                    runtime = TORCHSCRIPT
                elif self.classify.onednn_fusion:
                    logger.warning("oneDNN fusion failed on this network (%s); the .pt runs without it", str(e)[:200])
                    fusion = False
                else:
                    raise

    def _load(self, model_path: str) -> torch.jit.ScriptModule:
        with warnings.catch_warnings():
            # TorchScript (load, freeze) is deprecated upstream but supported in the pinned torch; it is our format.
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
            model = torch.jit.load(model_path, map_location=self.device).eval()
            if self.settings.freeze:
                # Freezing drops whatever it is not told to keep: the handler uses these.
                kept = ["preprocess", "classify", "class_names", "resize_size"]
                model = torch.jit.freeze(model, preserved_attrs=kept)
        return model

    def _warm_up(self) -> float:
        """Run preprocess and classify on a blank image before the first request; returns the seconds taken."""
        assert self.model is not None and self.classify is not None
        start = time.perf_counter()
        crop = self.model.preprocess(torch.zeros(WARM_UP_IMAGE_SIZE, dtype=torch.uint8, device=self.device))
        for size in sorted({1, self.settings.classify_batch_size or 1}):
            batch = torch.stack([crop] * size)
            for _ in range(WARM_UP_CALLS):
                self.classify(batch)
        return time.perf_counter() - start

    def handle(self, data: List[Dict[str, Any]], context: Any) -> List[Any]:
        """Answer every request of the batch; the images of all its requests are classified together.

        A request of one image gets a top-k object; a request in a list form (several file parts,
        `"instances"`, a `"data"` list) gets a list with one top-k object or error object per image,
        in request order. A bad request, or a bad image of a one-image request, gets its own 4xx.
        """
        assert self.model is not None, "initialize() must run before handle()"
        metrics = HandlerMetrics(context)
        found: List[RequestImages | RequestError] = []
        protocols: List[str | None] = []  # "v1"/"v2" for a KServe request (see kserve_protocol), else None
        bodies: List[Any] = []
        explains: List[bool] = []  # /explanations and :explain requests, answered by explain_images
        images: List[bytes | RequestError] = []
        owners: List[int] = []
        explained: List[Tuple[bytes | RequestError, int, int | None]] = []  # (image, request, target)
        for idx, request in enumerate(data):
            headers = context.get_all_request_header(idx) or {}
            explain = str(headers.get(EXPLAIN_HEADER, "")) == "True"
            try:
                request = decoded_body(request, headers, self.settings.max_decoded_body_bytes)
                body = kserve_protocol.request_body(request, headers)
            except RequestError as error:
                request, body = error, None
            protocol = kserve_protocol.protocol_of(body, self.kserve_envelope)
            protocols.append(protocol)
            bodies.append(body)
            explains.append(explain)
            limit = None if explain else self.settings.max_images_per_request  # explanations: checked below
            try:
                if isinstance(request, RequestError):
                    raise request
                if explain:
                    check_explainable(self.explainer, protocol)
                if protocol is None:
                    request_found = request_images(request, headers, limit)
                else:
                    request_found = kserve_protocol.request_images(protocol, body, limit)
                target = None
                if explain:
                    check_explanation_count(len(request_found.images), self.settings.max_images_per_explanation)
                    target = requested_target(request, body, headers, self.class_names)
            except RequestError as error:
                metrics.rejected(type(error).__name__, idx)
                found.append(error)
                continue
            except Exception as error:  # RecursionError, ...: still this request's own 400, never the batch's 503
                logger.warning("request %d: reading it failed", idx, exc_info=True)
                metrics.rejected(InvalidRequest.__name__, idx)
                found.append(InvalidRequest(f"unreadable request: {type(error).__name__}: {error}"))
                continue
            found.append(request_found)
            if explain:
                explained.extend((image, idx, target) for image in request_found.images)
            else:
                images.extend(request_found.images)
                owners.extend([idx] * len(request_found.images))
        answers = self.classify_images(images, owners, metrics)
        explanations = self.explain_images(explained, metrics)
        remaining, remaining_explained = iter(answers), iter(explanations)
        responses: List[Any] = []
        for idx, (request_found, protocol) in enumerate(zip(found, protocols)):
            if isinstance(request_found, RequestError):
                refuse = self._refuse if protocol is None else kserve_protocol.refuse
                responses.append(refuse(context, idx, request_found))
                continue
            if explains[idx]:
                pairs = [next(remaining_explained) for _ in request_found.images]
                if protocol is None:
                    own = [p if isinstance(p, RequestError) else p[1] for p in pairs]
                    responses.append(self._respond(context, idx, own, request_found.listed))
                else:
                    responses.append(kserve_protocol.respond_explanations(pairs, context, idx))
                continue
            own = [next(remaining) for _ in request_found.images]
            if protocol is None:
                responses.append(self._respond(context, idx, own, request_found.listed))
            else:
                responses.append(kserve_protocol.respond(protocol, own, bodies[idx], context, idx, self.topk))
        results = list(answers) + list(explanations) + list(found)
        refused = sum(isinstance(a, RequestError) for a in results)
        if refused:
            logger.info("batch of %d requests, %d images: %d refused", len(data), len(images), refused)
        return responses

    def classify_images(
        self, images: Sequence[bytes | RequestError], owners: Sequence[int], metrics: HandlerMetrics
    ) -> List[Dict[str, float] | RequestError]:
        """Decode, preprocess and classify encoded images as one batch; the core of every request form.

        `images[i]` is an encoded image or the error already found for it; `owners[i]` is the index of
        its request in TorchServe's batch (for metrics). Returns, per image, its top-k
        `{label: probability}` (most likely first) or the RequestError that refused it.
        """
        assert self.model is not None and self.classify is not None, "initialize() must run before classify_images()"
        answers: List[Dict[str, float] | RequestError] = list(images)  # type: ignore[arg-type]
        crops, positions = [], []
        for position, (image, idx) in enumerate(zip(images, owners)):
            try:
                if isinstance(image, RequestError):
                    raise image
                with metrics.decoding(idx):
                    decoded = decode_image(
                        image,
                        self.settings.max_image_pixels,
                        self.decode_min_side,
                        self.settings.max_full_decode_pixels,
                    )
                crops.append(self.model.preprocess(decoded.to(self.device)))
                positions.append(position)
            except RequestError as error:
                metrics.rejected(type(error).__name__, idx)
                answers[position] = error
            except Exception as error:  # preprocessing failed on an image no check foresaw: its own 400
                logger.warning("image %d: preprocessing failed", position, exc_info=True)
                metrics.rejected(InvalidImage.__name__, idx)
                answers[position] = InvalidImage(f"unprocessable image: {type(error).__name__}: {error}")
        if crops:
            # One forward pass per chunk: on a CPU, larger batches cost more per image (1 thread: 35 ms
            # an image alone, 63 in a batch of 8, 95 in a batch of 16), on a GPU less.
            chunk = self.settings.classify_batch_size or len(crops)
            with metrics.predicting():
                parts = []
                for start in range(0, len(crops), chunk):
                    parts.append(self.classify(torch.stack(crops[start : start + chunk])))
                probabilities = torch.cat(parts)
                top_p, top_i = probabilities.topk(self.topk, dim=1)
            for row, position in enumerate(positions):
                answers[position] = {self.class_names[i]: p for p, i in zip(top_p[row].tolist(), top_i[row].tolist())}
        return answers

    def explain_images(
        self, images: Sequence[Tuple[bytes | RequestError, int, int | None]], metrics: HandlerMetrics
    ) -> List[Tuple[TopK, Dict[str, Any]] | RequestError]:
        """Decode, classify and explain images one at a time: the work of an explanation request.

        `images[i]` is (an encoded image or the error already found for it, the index of its request in
        the batch, the class index the request asks to explain or None for the predicted one). Returns,
        per image, (its top-k, its explanation {"label", "probability", "attributions"}) or the
        RequestError that refused it. The label and probability are the prediction's, from the same
        runtime as predictions; an image that fails while being explained fails alone (ExplanationFailed).
        """
        answers: List[Tuple[TopK, Dict[str, Any]] | RequestError] = []
        if not images:
            return answers
        assert self.model is not None and self.classify is not None and self.explainer is not None
        for image, idx, target in images:
            try:
                if isinstance(image, RequestError):
                    raise image
                with metrics.decoding(idx):
                    decoded = decode_image(image, self.settings.max_image_pixels, self.decode_min_side)
                probabilities = self.classify(self.model.preprocess(decoded.to(self.device)).unsqueeze(0))[0]
                index = int(probabilities.argmax()) if target is None else target
                grid = self._attribution_grid(decoded, index)
                top_p, top_i = probabilities.topk(self.topk)
                topk = {self.class_names[i]: p for p, i in zip(top_p.tolist(), top_i.tolist())}
                answers.append((topk, explanation(self.class_names[index], float(probabilities[index]), grid)))
            except RequestError as error:
                metrics.rejected(type(error).__name__, idx)
                answers.append(error)
        return answers

    def _attribution_grid(self, image: torch.Tensor, index: int) -> torch.Tensor:
        assert self.explainer is not None
        try:
            return self.explainer.attribution_grid(image, index)
        except RequestError:
            raise
        except Exception as e:  # a network that fails under autograd must not fail the batch's other requests
            logger.exception("explanation failed")
            raise ExplanationFailed(f"the explanation failed: {type(e).__name__}: {str(e)[:200]}") from e

    def _respond(self, context: Any, idx: int, answers: List[Dict[str, Any] | RequestError], listed: bool) -> Any:
        if not listed:
            (answer,) = answers
            if isinstance(answer, RequestError):
                return self._refuse(context, idx, answer)
            context.set_response_content_type(idx, JSON_CONTENT_TYPE)
            return answer
        errors = [a for a in answers if isinstance(a, RequestError)]
        body = [a.to_json() if isinstance(a, RequestError) else a for a in answers]
        context.set_response_content_type(idx, JSON_CONTENT_TYPE)
        if not errors:
            return body
        if len(errors) < len(answers):
            status, phrase = PARTLY_REFUSED, f"{len(errors)} of {len(answers)} images refused; see each one's answer"
        else:
            statuses = {e.status for e in errors}
            status = statuses.pop() if len(statuses) == 1 else 400
            phrase = f"all {len(answers)} images refused; first: {errors[0]}"
        logger.info("request %d: %s", idx, phrase)
        context.set_response_status(status, status_phrase(phrase), idx)
        return body

    @staticmethod
    def _refuse(context: Any, idx: int, error: RequestError) -> Dict[str, Any]:
        body = error.to_json()
        logger.info("request %d refused: %d %s: %s", idx, error.status, body["type"], body["message"])
        context.set_response_status(error.status, status_phrase(str(body["message"])), idx)
        context.set_response_content_type(idx, JSON_CONTENT_TYPE)
        return body
