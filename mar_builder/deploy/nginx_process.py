"""Run nginx with a config `deploy nginx` wrote, in its own folder and process group: for the tests."""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import ServeError
from .nginx_front import CONF_FILE, PID_FILE

NGINX_FALLBACK = Path("/usr/sbin/nginx")  # Debian's, where root's PATH has it and others' may not


def nginx_binary() -> Path:
    """The nginx to run; ServeError saying how to install it (scripts/ensure_nginx.sh) when there is none."""
    found = shutil.which("nginx")
    if found:
        return Path(found)
    if NGINX_FALLBACK.is_file():
        return NGINX_FALLBACK
    raise ServeError("no nginx found: install Debian's with scripts/ensure_nginx.sh (make nginx)")


class NginxFront:
    """nginx in `prefix` (the folder `deploy nginx` wrote): pid, logs and temp files stay there."""

    def __init__(self, prefix: Path, host: str, port: int) -> None:
        self.prefix = Path(prefix).resolve()
        self.host, self.port = host, port
        self.process: subprocess.Popen | None = None

    def command(self, *extra: str) -> list:
        return [str(nginx_binary()), "-p", f"{self.prefix}/", "-c", CONF_FILE, "-e", "logs/error.log", *extra]

    def start(self, timeout: float = 15.0) -> "NginxFront":
        """Check the config (`nginx -t`), start nginx and return once it accepts connections; ServeError with
        nginx's own message otherwise."""
        check = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise ServeError(f"nginx refused {self.prefix / CONF_FILE}: {check.stderr.strip()}")
        self._check_port_free()
        pid_file = self.prefix / PID_FILE
        pid_file.unlink(missing_ok=True)
        log = open(self.prefix / "logs" / "console.log", "wb")
        with log:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise ServeError(f"nginx exited while starting: {self.error_tail()}")
            # nginx writes its pid file once it has bound every listening socket: then the one answering
            # on host:port is this nginx, not another server that held the port first.
            if _pid_in(pid_file) == self.process.pid:
                try:
                    socket.create_connection((self.host, self.port), timeout=1).close()
                    return self
                except OSError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise ServeError(f"nginx did not listen on {self.host}:{self.port} within {timeout:.0f} s")

    def _check_port_free(self) -> None:
        """ServeError when something already listens on host:port (nginx would retry for 2 s, then exit)."""
        with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nginx binds: TIME_WAIT is no owner
            try:
                probe.bind((self.host, self.port))
            except OSError as e:
                raise ServeError(f"cannot start the nginx front on {self.host}:{self.port}: {e.strerror}") from None

    def error_tail(self, lines: int = 5) -> str:
        path = self.prefix / "logs" / "error.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:]) or "no error log"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGQUIT (nginx's graceful stop), then SIGKILL to the whole group, workers included."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGQUIT)
            self.process.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None

    def __enter__(self) -> "NginxFront":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _pid_in(path: Path) -> "int | None":
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
