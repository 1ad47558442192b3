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
from .nginx_front import CONF_FILE

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
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise ServeError(f"nginx did not listen on {self.host}:{self.port} within {timeout:.0f} s")

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
