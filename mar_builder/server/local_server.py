"""Start a TorchServe of its own (own ports, pid file, sockets, logs): for serve, the tests and the benchmarks."""

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from ..constants import REPO_ROOT
from .server_ports import PORT_COUNT, check_free, with_ports
from .torchserve_client import KEY_FILE, Response, ServerError, TorchServeClient  # noqa: F401 (imported from here)

CONFIG_FILE = REPO_ROOT / "config.properties"
# This process's TorchServe; its frontend starts the workers with the Python that runs this script.
TORCHSERVE = Path(sys.executable).parent / "torchserve"


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


def private_environment(workdir: Path) -> Dict[str, str]:
    """This process's environment for a TorchServe that keeps to `workdir`: its pid file (TMPDIR), its
    worker sockets (TEMP, as java.io.tmpdir) and its logs, so that several servers coexist on a machine."""
    env = dict(os.environ)
    env.pop("TS_CONFIG_FILE", None)  # it would override --ts-config
    env.update(
        TMPDIR=str(workdir),
        TEMP=str(workdir),
        LOG_LOCATION=str(workdir / "logs"),
        METRICS_LOCATION=str(workdir / "logs"),
    )
    return env


def log_tail(workdir: Path, lines: int = 30) -> str:
    """The last `lines` lines of a TorchServe's console.log and model_log.log in `workdir`, for error messages."""
    text = ""
    for path in (workdir / "console.log", workdir / "logs" / "model_log.log"):
        if path.exists():
            text += "".join(path.read_text(errors="replace").splitlines(True)[-lines:])
    return text


def write_properties(path: Path, properties: Dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))


def store_only_urls(store: Path) -> str:
    """An allowed_urls value admitting file:// URLs of archives in `store` only, escaped for .properties."""
    return ("file://" + re.escape(str(store)) + r"/[^/]+\.mar").replace("\\", "\\\\")


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
        torchserve: Path = TORCHSERVE,
    ) -> None:
        """`config`: the settings to start from. `ports`: "free" (ports free now), "config" (those `config`
        names) or five ports: inference, management, metrics, gRPC inference, gRPC management.
        `torchserve`: the `torchserve` script to run, by default this Python's; another venv's (the image
        stack's, .venv-image/bin/torchserve) runs its workers on that venv's Python and packages."""
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
        self.torchserve = Path(torchserve)
        self.client = TorchServeClient.from_properties(self.properties, self.workdir)
        self.process: subprocess.Popen | None = None

    def start(self, wait_for: Sequence[str] | None = None, timeout: float = 180.0) -> "LocalTorchServe":
        """Start TorchServe in its own process group, its output in workdir; return once the workers of
        `wait_for` (by default every model it was started with) are READY. Raises ServerError (a taken
        port, a death while starting) with the reason on its first line; a key_file.json in workdir is
        then as it was before."""
        check_free(self.properties)
        key_file = self.workdir / KEY_FILE
        old_keys = key_file.read_bytes() if key_file.exists() else None
        env = private_environment(self.workdir)
        command = [str(self.torchserve), "--start", "--foreground", "--ncs", "--ts-config", str(self.config)]
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
        if wait_for is None:
            wait_for = [model.partition("=")[0] for model in self.models]
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
        return log_tail(self.workdir, lines)

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
    """`python -m mar_builder.server.local_server wait-ready MODEL`: wait for the server config.properties describes."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mar_builder.server.local_server", description=main.__doc__)
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
