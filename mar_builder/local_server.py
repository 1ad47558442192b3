"""Run a TorchServe on this machine and talk to it: used by the demo, the tests and the benchmarks."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from .errors import ServeError
from .server_ports import PORT_COUNT, check_free, with_ports

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = REPO_ROOT / "config.properties"
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


def free_ports(count: int) -> List[int]:
    """Ports the kernel hands out now on loopback; they stay free unless someone races for them."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def read_properties(path: Path = CONFIG_FILE) -> Dict[str, str]:
    properties = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            properties[key.strip()] = value.strip()
    return properties


def write_properties(path: Path, properties: Dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))


def store_only_urls(store: Path) -> str:
    """An allowed_urls value admitting file:// URLs of archives in `store` only, escaped for .properties."""
    return ("file://" + re.escape(str(store)) + r"/[^/]+\.mar").replace("\\", "\\\\")


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
        return self.request(
            "POST",
            f"{self.inference_url}/predictions/{model}",
            body,
            {"Content-Type": content_type},
            api="inference",
            timeout=timeout,
        )

    def ping(self) -> Response:
        # TorchServe 0.12 guards /ping with the inference key too.
        return self.request("GET", f"{self.inference_url}/ping", api="inference", timeout=5)

    def scale(self, model: str, workers: int, timeout: float = 300.0) -> Response:
        """Set min and max workers of `model`; answers once TorchServe has started or stopped them."""
        query = f"min_worker={workers}&max_worker={workers}&synchronous=true"
        return self.request("PUT", f"{self.management_url}/models/{model}?{query}", api="management", timeout=timeout)

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


class LocalTorchServe:
    """A TorchServe of its own in `workdir`: own ports, own pid file, own logs; stopped on exit."""

    def __init__(
        self,
        workdir: Path,
        model_store: Path,
        models: Sequence[str] = ("classifier=classifier.mar",),
        overrides: Dict[str, str] | None = None,
        config: Path = CONFIG_FILE,
        ports: Sequence[int] | str = "free",
    ) -> None:
        """`config`: the settings to start from. `ports`: "free" (ports free now), "config" (those `config`
        names) or five ports: inference, management, metrics, gRPC inference, gRPC management."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.properties = read_properties(config)
        if ports != "config":
            self.properties = with_ports(self.properties, free_ports(PORT_COUNT) if ports == "free" else ports)
        self.properties["model_store"] = str(Path(model_store).resolve())
        self.properties["allowed_urls"] = store_only_urls(Path(model_store).resolve())
        # The server runs in workdir: relative paths mean files beside the settings file.
        base = Path(config).resolve().parent
        if "metrics_config" in self.properties:
            self.properties["metrics_config"] = str(base / self.properties["metrics_config"])
        if "vmargs" in self.properties:
            self.properties["vmargs"] = re.sub(
                r"(-Dlog4j\.configurationFile=)(?!/|file:)(\S+)",
                lambda m: m.group(1) + str(base / m.group(2)),
                self.properties["vmargs"],
            )
        self.properties.update(overrides or {})
        self.config = self.workdir / "config.properties"
        write_properties(self.config, self.properties)
        self.models = list(models)
        self.client = TorchServeClient.from_properties(self.properties, self.workdir)
        self.process: subprocess.Popen | None = None

    def start(self, wait_for: Sequence[str] = ("classifier",), timeout: float = 180.0) -> "LocalTorchServe":
        """Start TorchServe in its own process group, its output in workdir; return once the workers of
        `wait_for` are READY. Raises ServerError (a taken port, a death while starting) with the reason on
        its first line; a key_file.json in workdir is then as it was before."""
        check_free(self.properties)
        key_file = self.workdir / KEY_FILE
        old_keys = key_file.read_bytes() if key_file.exists() else None
        env = dict(os.environ)
        env.pop("TS_CONFIG_FILE", None)  # it would override --ts-config
        # TorchServe keeps its pid file (TMPDIR) and its worker sockets (TEMP, as java.io.tmpdir) in
        # the temp dir: a private one lets several servers coexist.
        env.update(
            TMPDIR=str(self.workdir),
            TEMP=str(self.workdir),
            LOG_LOCATION=str(self.workdir / "logs"),
            METRICS_LOCATION=str(self.workdir / "logs"),
        )
        torchserve = Path(sys.executable).parent / "torchserve"
        command = [str(torchserve), "--start", "--foreground", "--ncs", "--ts-config", str(self.config)]
        if self.models:
            command += ["--models", *self.models]
        self.log_path = self.workdir / "console.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,  # never the caller's terminal or pipe: `serve | tail` returns
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() reaches the workers too
            )
        try:
            for model in wait_for:
                self.client.wait_ready(model, timeout, alive=lambda: self.process.poll() is None)
        except ServerError as e:
            self.stop()
            if old_keys is None:
                key_file.unlink(missing_ok=True)
            else:
                key_file.write_bytes(old_keys)
            reason = self.failure_reason()
            raise ServerError(f"{e}: {reason} (logs in {self.workdir})\nlast log lines:\n{self.log_tail()}") from None
        return self

    def failure_reason(self) -> str:
        """The log line that best says why TorchServe did not start: an error's, else the console's last."""
        lines = {}
        for path in (self.log_path, self.workdir / "logs" / "ts_log.log"):
            text = path.read_text(errors="replace") if path.exists() else ""
            lines[path] = [line.strip() for line in text.splitlines() if line.strip()]
        for marker in ("Address already in use", "Exception", "Error:", "ERROR"):
            found = [line for path_lines in lines.values() for line in path_lines if marker in line]
            if found:
                return found[-1][:300]
        return (lines[self.log_path] or ["no output"])[-1][:300]

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.log_path, self.workdir / "logs" / "model_log.log"):
            if path.exists():
                text += "".join(path.read_text(errors="replace").splitlines(True)[-lines:])
        return text

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Workers may outlive the frontend for a moment; make sure nothing of the group remains.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process = None

    def __enter__(self) -> "LocalTorchServe":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def addresses(self) -> Tuple[str, str, str]:
        p = self.properties
        return p["inference_address"], p["management_address"], p["metrics_address"]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mar_builder.local_server wait-ready MODEL`: wait for the server config.properties describes."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mar_builder.local_server", description=main.__doc__)
    parser.add_argument("action", choices=["wait-ready"])
    parser.add_argument("model")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    client = TorchServeClient.from_properties(read_properties(), Path.cwd())
    try:
        client.wait_ready(args.model, args.timeout)
    except ServerError as e:
        print(f"error: {e}; see logs/ts_log.log and logs/model_log.log", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
