"""Served load for `make bench`: closed-loop clients against a running TorchServe, and one row of what they measured."""

import logging
import time
from dataclasses import dataclass
from typing import Sequence, Tuple

import psutil

from mar_builder.server.load import Load, Shot, percentile
from mar_builder.server.local_server import LocalTorchServe, TorchServeClient

logger = logging.getLogger("benchmarks")


@dataclass(frozen=True)
class Row:
    setup: str
    clients: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu: float  # the load generator's CPU time over the window, as a fraction of one core
    frontend_cpu: float  # TorchServe's frontend (the JVM), likewise
    workers_cpu: float  # the model's worker processes together, likewise
    limit: float = 0.0  # its runtime's (a), measured right before and right after its runtime's rows, averaged
    baseline: float = 0.0  # likewise, (a) of the .pt as the workers ran it before this runtime work
    images: int = 1  # photos per request; photos/s counts photos, not requests


def server_cpu_seconds(server: LocalTorchServe) -> Tuple[float, float]:
    """CPU seconds used so far by the server's frontend (the JVM) and by its Python processes (the workers)."""
    frontend = workers = 0.0
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            used, name = sum(process.cpu_times()[:2]), process.name()
        except psutil.NoSuchProcess:
            continue
        if name == "java":
            frontend += used
        else:
            workers += used
    return frontend, workers


def measure(
    server: LocalTorchServe,
    model: str,
    shots: Sequence[Shot],
    clients: int,
    warmup: float,
    seconds: float,
    setup: str,
    images: int = 1,
) -> Row:
    """Closed-loop load: `clients` clients back to back; counts what completes inside the window after warm-up."""
    with Load(server.client, model, shots, clients=clients, timeout=120) as load:
        time.sleep(warmup)
        start, cpu_start, server_start = time.monotonic(), time.process_time(), server_cpu_seconds(server)
        time.sleep(seconds)
        end, cpu_end, server_end = time.monotonic(), time.process_time(), server_cpu_seconds(server)
    window = [o for o in load.outcomes() if start <= o.ended <= end]
    latencies = [o.latency * 1000 for o in window if o.status == 200]
    return Row(
        setup,
        clients,
        len(latencies) * images / (end - start),
        percentile(latencies, 50),
        percentile(latencies, 99),
        sum(o.status != 200 for o in window),
        (cpu_end - cpu_start) / (end - start),
        (server_end[0] - server_start[0]) / (end - start),
        (server_end[1] - server_start[1]) / (end - start),
        images=images,
    )


def warm_up(client: TorchServeClient, model: str, shots: Sequence[Shot], seconds: float) -> None:
    """Load that is not measured: the frontend's JIT compiler and the workers' TorchScript profiling settle."""
    logger.info("warming up %s for %.0f s", model, seconds)
    with Load(client, model, shots, clients=4, timeout=120):
        time.sleep(seconds)
