"""A stand-in for TorchServe's Context, enough to drive a handler without a server.

`deliver()` hands the handler what a TorchServe worker hands it: the requests' parameters are
framed as the frontend frames them and decoded by TorchServe's own worker code (bodies and form
values arrive as bytearray, JSON parsed only for exactly application/json, text/* as str, headers
as TorchServe names them).
"""

from __future__ import annotations  # bench's image-stack limit loads it on Python 3.9

import io
import struct
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from request_forms import HttpRequest
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.protocol.otf_message_handler import _retrieve_inference_msg
from ts.service import Service

METRICS_YAML = Path(__file__).resolve().parent.parent / "metrics.yaml"


class FakeContext:
    def __init__(
        self,
        model_dir: Path,
        serialized_file: str,
        model_yaml_config: Dict[str, Any] | None = None,
        gpu_id: int | None = None,
    ) -> None:
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": gpu_id, "batch_size": 4}
        self.manifest = {"model": {"modelName": "classifier", "serializedFile": serialized_file}}
        self.model_yaml_config = model_yaml_config or {}
        self.request_headers: List[Dict[str, Any]] = []
        self.statuses: Dict[int, Tuple[int, str]] = {}
        self.response_headers: Dict[int, Dict[str, str]] = {}
        # TorchServe's own metric cache, declared by the server's metrics.yaml, as in a worker.
        self.metrics = MetricsCacheYamlImpl(str(METRICS_YAML))
        self.metrics.initialize_cache()
        self.metrics.model_name = self.manifest["model"]["modelName"]

    def with_requests(self, headers: List[Dict[str, Any]]) -> FakeContext:
        self.request_headers = headers
        self.metrics.set_request_ids({idx: f"request-{idx}" for idx in range(len(headers))})
        self.statuses.clear()
        self.response_headers.clear()
        return self

    def deliver(self, requests: Sequence[HttpRequest]) -> List[Dict[str, Any]]:
        """The handler's `data` for these requests as one batch, through TorchServe's worker code."""
        frame = b"".join(_request_frame(f"request-{idx}", request) for idx, request in enumerate(requests))
        batch = _retrieve_inference_msg(_Socket(frame + struct.pack("!i", -1)))
        processors, data, _ = Service.retrieve_data_for_inference(batch)
        self.with_requests([processor.get_request_properties() for processor in processors])
        return data

    def get_all_request_header(self, idx: int) -> Dict[str, Any]:
        return self.request_headers[idx] if idx < len(self.request_headers) else {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.response_headers.setdefault(idx, {})["content-type"] = value

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.response_headers.setdefault(idx, {})[key] = value

    def get_request_id(self, idx: int = 0) -> str:
        return f"request-{idx}"

    def status(self, idx: int) -> int:
        """The HTTP status TorchServe would send for request `idx`."""
        return self.statuses.get(idx, (200, ""))[0]


class _Socket:
    """The worker's socket, reading a prepared frame."""

    def __init__(self, frame: bytes) -> None:
        self._stream = io.BytesIO(frame)

    def recv(self, length: int) -> bytes:
        return self._stream.read(length)


def _string(value: bytes) -> bytes:
    return struct.pack("!i", len(value)) + value


def _request_frame(request_id: str, request: HttpRequest) -> bytes:
    # The HTTP headers the frontend passes on, with the two it adds.
    headers = {"Content-Length": str(len(request.body)), "explain": "False", "url_path": ""}
    if request.content_type is not None:
        headers["Content-Type"] = request.content_type
    headers.update(request.headers)
    frame = _string(request_id.encode())
    frame += b"".join(_string(k.encode()) + _string(v.encode()) for k, v in headers.items()) + struct.pack("!i", -1)
    for name, value, content_type in request.parameters:
        frame += _string(name.encode()) + _string(content_type.encode()) + _string(value)
    return frame + struct.pack("!i", -1)
