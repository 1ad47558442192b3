"""A KServe TorchServe pod simulated on this machine: the runtime's command and envelope, loopback ports."""

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Dict, List

from ..server.local_server import (
    TORCHSERVE,
    ServerError,
    TorchServeClient,
    free_ports,
    log_tail,
    private_environment,
    read_properties,
    write_properties,
)
from .command import CONFIG_DIR, MODEL_STORE_DIR
from .manifests import MOUNT_PATH, torchserve_args

# KServe sets TS_SERVICE_ENVELOPE from the InferenceService's protocolVersion (kserve-torchserve.yaml).
ENVELOPES = {"v1": "kserve", "v2": "kservev2", None: ""}


class SimulatedPod:
    """TorchServe started as KServe's runtime starts it, from a layout written by `deploy`.

    What differs from the pod, and only that: the layout lives in `layout` instead of /mnt/models
    (the config.properties copy in `workdir` says so), and the five ports are free loopback ports,
    set through TS_* environment variables (the layout turns enable_envvars_config on).
    `protocol` "v1"/"v2" sets TS_SERVICE_ENVELOPE to kserve/kservev2; None starts a plain TorchServe.
    `torchserve`: the `torchserve` script to run (another venv's runs the workers on its Python).
    """

    def __init__(self, layout: Path, workdir: Path, protocol: str | None, torchserve: Path = TORCHSERVE) -> None:
        self.layout = Path(layout).resolve()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.protocol = protocol
        self.torchserve = Path(torchserve)
        generated = read_properties(self.layout / CONFIG_DIR / "config.properties")
        self.config = self.workdir / "config.properties"
        write_properties(self.config, {k: v.replace(MOUNT_PATH, str(self.layout)) for k, v in generated.items()})
        inference, management, metrics, grpc_inference, grpc_management = free_ports(5)
        self.ports = {
            "TS_INFERENCE_ADDRESS": f"http://127.0.0.1:{inference}",
            "TS_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{management}",
            "TS_METRICS_ADDRESS": f"http://127.0.0.1:{metrics}",
            "TS_GRPC_INFERENCE_PORT": str(grpc_inference),
            "TS_GRPC_MANAGEMENT_PORT": str(grpc_management),
        }
        self.model = next(iter(json.loads(generated["model_snapshot"])["models"]))
        self.client = TorchServeClient(
            self.ports["TS_INFERENCE_ADDRESS"],
            self.ports["TS_MANAGEMENT_ADDRESS"],
            self.workdir / "key_file.json",
            self.ports["TS_METRICS_ADDRESS"],
        )
        self.process: subprocess.Popen | None = None

    def args(self) -> List[str]:
        """The runtime's arguments, with the mount path replaced by the layout's folder."""
        args = [a.replace(f"{MOUNT_PATH}/{CONFIG_DIR}/config.properties", str(self.config)) for a in torchserve_args()]
        args = [a.replace(f"{MOUNT_PATH}/{MODEL_STORE_DIR}", str(self.layout / MODEL_STORE_DIR)) for a in args]
        return [str(self.torchserve.parent / args[0]), *args[1:]]

    def env(self) -> Dict[str, str]:
        env = private_environment(self.workdir)
        env.update(self.ports)
        env.pop("TS_SERVICE_ENVELOPE", None)
        if ENVELOPES[self.protocol]:
            env["TS_SERVICE_ENVELOPE"] = ENVELOPES[self.protocol]
        return env

    def start(self, timeout: float = 180.0) -> "SimulatedPod":
        """Start TorchServe and wait until the model's workers are READY; ServerError (with the log's
        last lines) when it exits or is not ready within `timeout` seconds."""
        self.log_path = self.workdir / "console.log"
        with open(self.log_path, "wb") as log:
            # `torchserve --start` without --foreground, as in the pod: the CLI starts the frontend and
            # returns; the frontend stays in this process group, which stop() ends.
            self.process = subprocess.Popen(
                self.args(),
                cwd=self.workdir,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.client.wait_ready(self.model, timeout)
        except ServerError as e:
            self.stop()
            raise ServerError(f"{e}; last log lines:\n{self.log_tail()}") from None
        return self

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.workdir, lines)

    def stop(self) -> None:
        if self.process is None:
            return
        subprocess.run([self.args()[0], "--stop"], env=self.env(), cwd=self.workdir, capture_output=True, timeout=60)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # workers that outlived the frontend, if any
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self.process = None

    def __enter__(self) -> "SimulatedPod":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
