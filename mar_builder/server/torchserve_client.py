"""Talk to a running TorchServe: predictions, /ping, scaling, key rotation, metrics, waiting for READY
workers; with the bearer keys from its key_file.json."""

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

from ..errors import ServeError

KEY_FILE = "key_file.json"  # TorchServe writes it into its working directory


class ServerError(ServeError):
    """TorchServe did not start, did not become ready, or answered something unexpected."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class TorchServeClient:
    """Inference and management calls with the bearer tokens from key_file.json."""

    def __init__(self, inference_url: str, management_url: str, key_file: Path, metrics_url: str = "") -> None:
        self.inference_url = inference_url.rstrip("/")
        self.management_url = management_url.rstrip("/")
        self.metrics_url = metrics_url.rstrip("/")
        self.key_file = key_file

    @classmethod
    def from_properties(cls, properties: Dict[str, str], workdir: Path) -> "TorchServeClient":
        return cls(
            properties["inference_address"],
            properties["management_address"],
            workdir / KEY_FILE,
            properties.get("metrics_address", ""),
        )

    def token(self, api: str) -> str | None:
        """The current key for "inference", "management" or "API" (/token only); None when token auth is off."""
        try:
            keys = json.loads(self.key_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return keys.get(api, {}).get("key")

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: Dict[str, str] | None = None,
        api: str | None = None,
        timeout: float = 60.0,
    ) -> Response:
        headers = dict(headers or {})
        token = self.token(api) if api else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Response(r.status, r.read(), dict(r.headers))
        except urllib.error.HTTPError as e:
            return Response(e.code, e.read(), dict(e.headers))

    def predict(
        self,
        model: str,
        body: bytes,
        content_type: str = "application/octet-stream",
        timeout: float = 60.0,
    ) -> Response:
        return self._post_inference(f"predictions/{model}", body, content_type, timeout)

    def explain(
        self,
        model: str,
        body: bytes,
        content_type: str = "application/octet-stream",
        timeout: float = 120.0,
    ) -> Response:
        """POST /explanations/<model>: the handler's {"label", "probability", "attributions"} per image."""
        return self._post_inference(f"explanations/{model}", body, content_type, timeout)

    def _post_inference(self, route: str, body: bytes, content_type: str, timeout: float) -> Response:
        headers = {"Content-Type": content_type}
        return self.request("POST", f"{self.inference_url}/{route}", body, headers, api="inference", timeout=timeout)

    def ping(self) -> Response:
        # TorchServe 0.12 guards /ping with the inference key too.
        return self.request("GET", f"{self.inference_url}/ping", api="inference", timeout=5)

    def scale(self, model: str, workers: int, timeout: float = 300.0) -> Response:
        """Set min and max workers of `model`; answers once exactly `workers` workers are READY.

        TorchServe's synchronous answer can come while a worker stopped by an earlier scale-down is still
        UNLOADING and counted as one of the `workers`: then the request is repeated once that worker is
        gone. Raises ServerError when the workers are not READY within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        query = f"min_worker={workers}&max_worker={workers}&synchronous=true"
        url = f"{self.management_url}/models/{model}?{query}"
        response = self.request("PUT", url, api="management", timeout=timeout)
        while response.status == 200:
            states = [w["status"] for w in self.workers(model)]
            if states == ["READY"] * workers:
                break
            if time.monotonic() > deadline:
                raise ServerError(f"{model}: workers {states} after {timeout:.0f} s, not {workers} READY")
            if len(states) < workers and "UNLOADING" not in states:
                response = self.request("PUT", url, api="management", timeout=max(1.0, deadline - time.monotonic()))
            time.sleep(0.5)
        return response

    def rotate_key(self, api: str) -> Response:
        """A new "inference" or "management" key in key_file.json; the old one stops working at once."""
        return self.request("POST", f"{self.management_url}/token?type={api}", api="API", timeout=10)

    def metrics(self) -> str:
        """The Prometheus scrape of the metrics API (no key needed there)."""
        return self.request("GET", f"{self.metrics_url}/metrics", timeout=10).body.decode()

    def describe(self, model: str) -> Response:
        return self.request("GET", f"{self.management_url}/models/{model}", api="management", timeout=10)

    def workers(self, model: str) -> List[Dict[str, Any]]:
        response = self.describe(model)
        if response.status != 200:
            return []
        return [w for entry in response.json() for w in entry.get("workers", [])]

    def wait_ready(self, model: str, timeout: float = 180.0, alive: Any = None) -> None:
        """Block until every worker of `model` is READY (and at least minWorkers exist)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if alive is not None and not alive():
                raise ServerError("TorchServe exited while starting")
            try:
                response = self.describe(model)
                if response.status == 200:
                    entry = response.json()[0]
                    workers = entry.get("workers", [])
                    if len(workers) >= entry.get("minWorkers", 1) and all(w["status"] == "READY" for w in workers):
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass  # not listening yet
            time.sleep(0.5)
        raise ServerError(f"model {model!r} had no READY workers after {timeout:.0f} s")
