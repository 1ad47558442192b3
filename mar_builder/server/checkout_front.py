"""`serve --front HOST:PORT`: the nginx front (docs/security.md) before this checkout's TorchServe, and its stop.

Its files live in STATE_DIR/nginx-front/ (nginx.conf, nginx.pid, logs/, tmp/); `stop` finds it by its pid file.
"""

import logging
import os
import signal
import time
from pathlib import Path
from typing import Dict

import psutil

from ..deploy.nginx_front import front_settings, parse_listen, write_front
from ..deploy.nginx_process import NginxFront
from ..errors import ServeError, SettingsError

logger = logging.getLogger("mar_builder.serve")
FRONT_DIR = "nginx-front"


def check_listen(listen: str) -> None:
    """ServeError for a --front that is not HOST:PORT, before TorchServe starts."""
    try:
        parse_listen(listen)
    except SettingsError as e:
        raise ServeError(str(e).replace("--listen", "--front")) from None


def start_front(state_dir: Path, properties: Dict[str, str], listen: str) -> NginxFront:
    """Write the front for the TorchServe that `properties` describe and start nginx, detached (it keeps
    running after this command, like TorchServe). As root, nginx's workers run as the state folder's owner,
    who can reach it (Debian's default, www-data, may not). Raises ServeError when nginx does not start."""
    out = state_dir / FRONT_DIR
    owner = out.parent.owner() if os.geteuid() == 0 else ""
    try:
        settings = front_settings(properties, listen, user=owner)
    except SettingsError as e:
        raise ServeError(str(e)) from None
    write_front(out, settings)
    return NginxFront(out, settings.listen_host, settings.listen_port).start()


def front_pid(state_dir: Path) -> int | None:
    """The pid of this state folder's running nginx front, or None."""
    pid_file = state_dir / FRONT_DIR / "nginx.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        process = psutil.Process(pid)
        return pid if "nginx" in process.name() else None
    except (OSError, ValueError, IndexError, psutil.Error):
        return None


def stop_front(state_dir: Path, timeout: float = 10.0) -> int | None:
    """Stop this state folder's nginx front (SIGQUIT, then SIGKILL to its master and workers); the pid it
    stopped, or None when none was running."""
    pid = front_pid(state_dir)
    if pid is None:
        return None
    try:
        master = psutil.Process(pid)
        members = [master, *master.children()]
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + timeout
        while master.is_running() and master.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.1)
        for process in members:
            if process.is_running():
                process.kill()
    except psutil.Error:
        pass
    (state_dir / FRONT_DIR / "nginx.pid").unlink(missing_ok=True)
    return pid
