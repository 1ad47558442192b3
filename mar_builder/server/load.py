"""Steady client load on a TorchServe: threads send requests back to back and record every outcome."""

import http.client
import json
import threading
import time
import urllib.error
from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple

from .local_server import REPO_ROOT, TorchServeClient

SAMPLES = REPO_ROOT / "samples"


@dataclass(frozen=True)
class Shot:
    """One request to send: a good photo or a kind of bad input."""

    kind: str  # a short label for reports, e.g. "chelsea.png" or "garbage"
    body: bytes
    content_type: str = "application/octet-stream"
    valid: bool = True  # a valid image must get 200; anything else must get a 4xx


@dataclass(frozen=True)
class Outcome:
    kind: str
    valid: bool
    status: int  # HTTP status; 0 when the connection itself failed
    error_type: str  # the answer's JSON "type" (or the exception's name); "" for 200
    message: str  # the answer's JSON "message", shortened; "" for 200
    started: float  # time.monotonic() when the request was sent
    latency: float  # seconds until the answer (or the failure)

    @property
    def ended(self) -> float:
        return self.started + self.latency


class Load:
    """`clients` threads, each cycling through `shots` from its own offset, until stop()."""

    def __init__(
        self, client: TorchServeClient, model: str, shots: Sequence[Shot], clients: int = 4, timeout: float = 60.0
    ) -> None:
        if not shots or clients < 1:
            raise ValueError(f"need at least one shot and one client, got {len(shots)} and {clients}")
        self.client = client
        self.model = model
        self.shots = list(shots)
        self.timeout = timeout
        self._outcomes: List[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> List[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        return self.outcomes()

    def outcomes(self) -> List[Outcome]:
        with self._lock:
            return list(self._outcomes)

    def _run(self, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            shot = self.shots[i % len(self.shots)]
            i += 1
            outcome = self.send(shot)
            with self._lock:
                self._outcomes.append(outcome)

    def send(self, shot: Shot) -> Outcome:
        started = time.monotonic()
        try:
            response = self.client.predict(self.model, shot.body, shot.content_type, timeout=self.timeout)
            status = response.status
            error_type, message = ("", "") if status == 200 else _error_of(response.body)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            # The server closed or reset the connection: no HTTP answer at all.
            status, error_type, message = 0, type(e).__name__, str(e)[:80]
        return Outcome(shot.kind, shot.valid, status, error_type, message, started, time.monotonic() - started)


def _error_of(body: bytes) -> Tuple[str, str]:
    """(type, message) of an error answer: ours and TorchServe's are JSON with both."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return "", body[:80].decode(errors="replace")
    return str(answer.get("type", "")), str(answer.get("message", ""))[:80]


def photo_shots() -> List[Shot]:
    """The sample photos, sent raw: valid requests."""
    return [Shot(p.name, p.read_bytes()) for p in sorted(SAMPLES.iterdir()) if p.suffix in (".png", ".jpg")]


def failures(outcomes: Sequence[Outcome]) -> List[Outcome]:
    """Outcomes that broke the contract: a valid image not answered 200, or a bad input answered 5xx (or not at all)."""
    return [o for o in outcomes if (o.status != 200 if o.valid else not 400 <= o.status < 500)]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]
