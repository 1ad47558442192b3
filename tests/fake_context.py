"""A stand-in for TorchServe's Context, enough to drive a handler without a server."""

from pathlib import Path
from typing import Any, Dict, List, Tuple

from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

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
        self.request_headers: List[Dict[str, str]] = []
        self.statuses: Dict[int, Tuple[int, str]] = {}
        self.response_headers: Dict[int, Dict[str, str]] = {}
        # TorchServe's own metric cache, declared by the server's metrics.yaml, as in a worker.
        self.metrics = MetricsCacheYamlImpl(str(METRICS_YAML))
        self.metrics.initialize_cache()
        self.metrics.model_name = self.manifest["model"]["modelName"]

    def with_requests(self, headers: List[Dict[str, str]]) -> "FakeContext":
        self.request_headers = headers
        self.metrics.set_request_ids({idx: f"request-{idx}" for idx in range(len(headers))})
        self.statuses.clear()
        self.response_headers.clear()
        return self

    def get_all_request_header(self, idx: int) -> Dict[str, str]:
        return self.request_headers[idx] if idx < len(self.request_headers) else {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.response_headers.setdefault(idx, {})["content-type"] = value
