"""This checkout's own TorchServe: started in a state folder of its own (settings, pid file, worker sockets,
logs, key_file.json), found again by later commands, and stopped without touching any other server."""

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import psutil

from ..errors import ServeError
from .local_server import KEY_FILE, REPO_ROOT, LocalTorchServe, TorchServeClient, read_properties
from .server_ports import check_free

STATE_DIR_ENV = "MAR_BUILDER_STATE_DIR"  # another state folder for every server command
STATE_DIR_NAME = ".torchserve"
PID_FILE = ".model_server.pid"  # TorchServe's own, in its TMPDIR: the state folder
SETTINGS_FILE = "config.properties"  # the settings the server runs with, written at start
TS_NAMESPACE = "org.pytorch.serve.ModelServer"  # in the Java frontend's command line


def default_state_dir() -> Path:
    """$MAR_BUILDER_STATE_DIR, else .torchserve/ in the checkout that holds this code."""
    return Path(os.environ.get(STATE_DIR_ENV) or REPO_ROOT / STATE_DIR_NAME).resolve()


@dataclass(frozen=True)
class RunningServer:
    """A TorchServe that was started in `state_dir` and still runs."""

    state_dir: Path  # its working directory and TMPDIR
    pid: int  # the Java frontend's
    properties: Dict[str, str]  # the settings it runs with

    @property
    def client(self) -> TorchServeClient:
        return TorchServeClient.from_properties(self.properties, self.state_dir)

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def models(self) -> List[str]:
        """The names of the models it serves; raises ServeError when the management API does not answer."""
        try:
            response = self.client.request("GET", f"{self.client.management_url}/models", api="management", timeout=10)
        except OSError as e:
            raise ServeError(f"TorchServe (pid {self.pid}) does not answer on {self.client.management_url}: {e}") from e
        if response.status != 200:
            raise ServeError(f"listing the models: TorchServe answered {response.status}: {response.body[:200]!r}")
        return [entry["modelName"] for entry in response.json().get("models", [])]

    def model(self, chosen: str | None) -> str:
        """`chosen`, or else the one model the server serves."""
        if chosen:
            return chosen
        models = self.models()
        if len(models) != 1:
            raise ServeError(f"this server serves {', '.join(models) or 'no model'}: choose one with --model NAME")
        return models[0]


def find_running(state_dir: Path) -> RunningServer | None:
    """The TorchServe whose pid file is in `state_dir`, if that process still runs and was started with
    the settings file there (a reused pid is not taken for it)."""
    state_dir = state_dir.resolve()
    try:
        pid = int((state_dir / PID_FILE).read_text().split()[0])
        process = psutil.Process(pid)
        command = process.cmdline()
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    settings = state_dir / SETTINGS_FILE
    if TS_NAMESPACE not in command or str(settings) not in command:
        return None
    return RunningServer(state_dir, pid, read_properties(settings))


def require_running(state_dir: Path) -> RunningServer:
    running = find_running(state_dir)
    if running is None:
        raise ServeError(
            f"no TorchServe of this checkout is running (state folder {state_dir}); "
            "start it with `mar-builder serve` (or make serve)"
        )
    return running


def start(
    state_dir: Path,
    model_store: Path,
    names: Sequence[str],
    config: Path,
    ports: Sequence[int] | str,
    timeout: float,
    starting: Callable[[], None] = lambda: None,
) -> RunningServer:
    """Start TorchServe in `state_dir` with model_store/<name>.mar for each name; return once every
    model's workers are READY. Raises ServeError: already running, an archive missing, a port taken,
    TorchServe died or was not ready within `timeout` seconds (it is stopped then). `starting` is
    called once every check has passed, just before TorchServe starts."""
    state_dir = state_dir.resolve()
    running = find_running(state_dir)
    if running is not None:
        raise ServeError(
            f"this checkout's TorchServe already runs (pid {running.pid}, {running.client.inference_url}); "
            "stop it first with `mar-builder stop` (or make stop)"
        )
    for name in names:
        if not (model_store / f"{name}.mar").is_file():
            present = ", ".join(sorted(p.stem for p in model_store.glob("*.mar"))) or "none"
            raise ServeError(
                f"no archive {model_store / (name + '.mar')} (archives there: {present}); "
                f"build it with ./build_mar.sh --name {name}"
            )
    server = LocalTorchServe(state_dir, model_store, models=[f"{n}={n}.mar" for n in names], config=config, ports=ports)
    check_free(server.properties)
    starting()
    server.start(timeout=timeout)
    pid = int((state_dir / PID_FILE).read_text().split()[0])
    return RunningServer(state_dir, pid, server.properties)


def stop(running: RunningServer, timeout: float = 60.0) -> None:
    """Stop this server's frontend, its workers and its launcher (SIGTERM, then SIGKILL after `timeout`
    seconds), and remove its pid file and key_file.json. Other servers on the machine are not touched."""
    try:
        frontend = psutil.Process(running.pid)
        members = [frontend, *frontend.children(recursive=True)]
        launcher = frontend.parent()
        if launcher is not None and any("torchserve" in part for part in launcher.cmdline()[:2]):
            members.append(launcher)
    except psutil.Error:
        members = []
    for signal_members, wait in (("terminate", timeout), ("kill", 10.0)):
        for process in _alive(members):
            try:
                getattr(process, signal_members)()
            except psutil.Error:
                pass
        deadline = time.monotonic() + wait
        while _alive(members) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _alive(members):
            break
    (running.state_dir / PID_FILE).unlink(missing_ok=True)
    (running.state_dir / KEY_FILE).unlink(missing_ok=True)


def _alive(processes: List[psutil.Process]) -> List[psutil.Process]:
    """Those still running; a zombie (dead, not yet reaped by its parent) counts as stopped."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.Error:
            pass
    return alive
