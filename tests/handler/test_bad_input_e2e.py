"""Bad input through a real TorchServe: typed 4xx for that request alone, workers unharmed."""

import re
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

import pytest
from bad_inputs import OCTET, BadRequest, bad_requests, odd_but_valid_images
from image_fuzz import mutations
from image_variants import SAMPLES

from mar_builder.server.soak import worker_rss

pytestmark = pytest.mark.e2e

MODEL = "classifier"
GOOD = (SAMPLES / "chelsea.png").read_bytes()


def worker_pids(server) -> List[int]:
    workers = server.client.workers(MODEL)
    assert workers and all(w["status"] == "READY" for w in workers), workers
    return sorted(w["pid"] for w in workers)


def check_refusal(response, case: BadRequest) -> None:
    assert response.status == case.status, (case.name, response.status, response.body[:300])
    body = response.json()
    assert body["code"] == case.status and body["type"] == case.type, (case.name, body)
    assert re.search(case.message, body["message"]), (case.name, body["message"])


def test_every_bad_input_gets_its_typed_error_and_no_worker_dies(server):
    pids = worker_pids(server)
    cases = bad_requests()
    for case in cases:
        check_refusal(server.client.predict(MODEL, case.body, case.content_type), case)
    assert len(cases) >= 21
    assert server.client.predict(MODEL, GOOD).status == 200
    assert worker_pids(server) == pids


def test_odd_but_valid_images_are_classified(server):
    for name, data in odd_but_valid_images().items():
        response = server.client.predict(MODEL, data)
        assert response.status == 200, (name, response.body[:300])
        answer = response.json()
        assert len(answer) == 5 and list(answer.values()) == sorted(answer.values(), reverse=True), name


def test_request_over_max_request_size_is_refused_by_torchserve(server, tmp_path):
    limit = int(server.properties["max_request_size"])
    assert limit == 32 * 1024 * 1024  # the documented value in config.properties
    too_big = tmp_path / "too_big.jpg"
    too_big.write_bytes(b"\xff\xd8\xff" + bytes(limit))
    # curl asks first (Expect: 100-continue) and TorchServe answers 413 before the body is sent.
    key = server.client.token("inference")
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {key}"]
        + ["-T", str(too_big), f"{server.client.inference_url}/predictions/{MODEL}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout == "413", out.stderr
    assert server.client.predict(MODEL, GOOD).status == 200


def test_fuzzed_uploads_never_get_a_server_error(server):
    pids = worker_pids(server)
    statuses: Dict[int, int] = {}
    for name, data in mutations(150, seed=99):
        response = server.client.predict(MODEL, data)
        assert response.status in (200, 400, 413), (name, response.status, response.body[:300])
        statuses[response.status] = statuses.get(response.status, 0) + 1
    assert statuses.get(200, 0) > 10 and statuses.get(400, 0) > 30, statuses
    assert worker_pids(server) == pids


def test_good_and_bad_requests_in_the_same_batch_each_get_their_own_answer(server):
    alone = server.client.predict(MODEL, GOOD).json()
    bad = [case for case in bad_requests() if case.content_type == OCTET][:6]
    jobs: List[BadRequest | None] = [None] * 10 + bad * 2  # None: the good photo
    log = server.workdir / "logs" / "model_log.log"
    log_start = log.stat().st_size
    start = threading.Barrier(len(jobs))

    def send(case: BadRequest | None):
        start.wait()  # all at once, so that the workers' batches mix good and bad requests
        return server.client.predict(MODEL, GOOD if case is None else case.body)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        responses = list(pool.map(send, jobs))
    for case, response in zip(jobs, responses, strict=True):
        if case is None:
            assert response.status == 200, response.body[:300]
            assert response.json() == pytest.approx(alone, abs=1e-4)
        else:
            check_refusal(response, case)
    # The handler logs each batch that held refusals; at least one also held answered images.
    with open(log, "rb") as f:
        f.seek(log_start)
        batches = re.findall(rb"batch of (\d+) requests, (\d+) images: (\d+) refused", f.read())
    assert any(int(images) > int(refused) > 0 for _, images, refused in batches), batches


def test_worker_memory_stays_flat_over_a_thousand_bad_requests(server):
    cases = bad_requests()
    pids = worker_pids(server)

    def send(i: int) -> int:
        case = cases[i % len(cases)]
        return server.client.predict(MODEL, case.body, case.content_type).status

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(s in (400, 413) for s in pool.map(send, range(200)))  # warm-up: allocator pools fill
        before = worker_rss(server.client, MODEL)
        statuses = list(pool.map(send, range(1000)))
    after = worker_rss(server.client, MODEL)
    assert sorted(set(statuses)) == [400, 413]
    assert worker_pids(server) == pids
    for pid in pids:
        growth = (after[pid] - before[pid]) / before[pid]
        print(
            f"worker {pid}: RSS {before[pid] >> 10} kB -> {after[pid] >> 10} kB ({growth:+.1%}) over 1000 bad requests"
        )
        assert growth < 0.05, (pid, before[pid], after[pid])
