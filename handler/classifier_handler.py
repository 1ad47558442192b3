"""TorchServe handler: decode request images, classify them with the scripted Predictor, answer top-k."""

import logging
import os
import warnings
from typing import Any, Dict, List

import kserve_protocol
import torch
from handler_metrics import HandlerMetrics
from handler_settings import HandlerSettings
from image_decoding import decode_image
from request_errors import RequestError
from request_payload import image_bytes

logger = logging.getLogger(__name__)


class ClassifierHandler:
    """Loads the exported .pt once; all preprocessing and the softmax live inside it."""

    def __init__(self) -> None:
        self.model: torch.jit.ScriptModule | None = None
        self.device = torch.device("cpu")
        self.settings = HandlerSettings()
        self.class_names: List[str] = []
        self.topk = 1
        self.decode_min_side: int | None = None
        self.memory_format = torch.contiguous_format
        self.kserve_envelope: str | None = None  # "v1"/"v2" when TorchServe runs behind KServe's envelope
        self.initialized = False

    def initialize(self, context: Any) -> None:
        properties = context.system_properties
        model_config = getattr(context, "model_yaml_config", None) or {}
        self.settings = HandlerSettings.from_model_config(model_config)
        threads = self.settings.torch_threads(int(model_config.get("minWorkers", 1)))
        torch.set_num_threads(threads)
        gpu_id = properties.get("gpu_id")
        if gpu_id is not None and torch.cuda.is_available():
            self.device = torch.device(f"cuda:{gpu_id}")
        model_path = os.path.join(properties["model_dir"], context.manifest["model"]["serializedFile"])
        with warnings.catch_warnings():
            # TorchScript (load, freeze) is deprecated upstream but supported in the pinned torch; it is our format.
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
            model = torch.jit.load(model_path, map_location=self.device).eval()
            if self.settings.freeze:
                # Freezing drops whatever it is not told to keep: the handler uses these.
                kept = ["preprocess", "classify", "class_names", "resize_size"]
                model = torch.jit.freeze(model, preserved_attrs=kept)
        self.model = model
        self.class_names = list(self.model.class_names)
        self.topk = min(self.settings.topk, len(self.class_names))
        factor = self.settings.jpeg_draft_factor
        self.decode_min_side = factor * int(self.model.resize_size) if factor else None
        self.memory_format = torch.channels_last if self.settings.channels_last else torch.contiguous_format
        self.kserve_envelope = kserve_protocol.bypass_envelopes()
        self.initialized = True
        logger.info(
            "loaded %s: %d classes, top-%d, %d torch threads, device %s",
            model_path,
            len(self.class_names),
            self.topk,
            threads,
            self.device,
        )

    def handle(self, data: List[Dict[str, Any]], context: Any) -> List[Any]:
        """Answer every request of the batch; a bad one gets its own 4xx, the others their top-k."""
        assert self.model is not None, "initialize() must run before handle()"
        if any(kserve_protocol.protocol_of(request, self.kserve_envelope) for request in data):
            return kserve_protocol.handle_batch(self, data, context)
        metrics = HandlerMetrics(context)
        responses: List[Any] = [None] * len(data)
        images, positions = [], []
        for idx, request in enumerate(data):
            try:
                payload = image_bytes(request, context.get_all_request_header(idx))
                with metrics.decoding(idx):
                    image = decode_image(payload, self.settings.max_image_pixels, self.decode_min_side)
                images.append(self.model.preprocess(image.to(self.device)))
                positions.append(idx)
            except RequestError as error:
                metrics.rejected(type(error).__name__, idx)
                responses[idx] = self._refuse(context, idx, error)
        if images:
            with metrics.predicting():
                batch = torch.stack(images)
                if batch.dim() == 4:  # preprocessed images; a wrapped classifier's preprocess gives probability rows
                    batch = batch.contiguous(memory_format=self.memory_format)
                probabilities = self.model.classify(batch).cpu()
                top_p, top_i = probabilities.topk(self.topk, dim=1)
            for row, idx in enumerate(positions):
                responses[idx] = {
                    self.class_names[i]: p for p, i in zip(top_p[row].tolist(), top_i[row].tolist(), strict=True)
                }
        if len(positions) < len(data):
            logger.info("batch of %d: %d classified, %d refused", len(data), len(positions), len(data) - len(positions))
        return responses

    @staticmethod
    def _refuse(context: Any, idx: int, error: RequestError) -> Dict[str, Any]:
        body = error.to_json()
        logger.info("request %d refused: %d %s: %s", idx, error.status, body["type"], body["message"])
        # The reason phrase goes on the HTTP status line: one short printable ASCII line.
        phrase = "".join(c if " " <= c <= "~" else "?" for c in body["message"])[:200]
        context.set_response_status(error.status, phrase, idx)
        context.set_response_content_type(idx, "application/json")
        return body
