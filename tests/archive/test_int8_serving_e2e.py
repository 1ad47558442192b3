"""End to end: an int8 archive built on generated photos, served by a real TorchServe on loopback."""

import io
import zipfile

import numpy as np
import onnxruntime
import pytest
import torch
from calibration_data import CLASSES, model_files, write_photos

from mar_builder.cli import main as build_main
from mar_builder.model.calibration_photos import decode_upright_rgb
from mar_builder.server.local_server import LocalTorchServe

pytestmark = pytest.mark.e2e


def test_the_int8_archive_serves_its_int8_answers_and_its_workers_say_so(tmp_path):
    store = tmp_path / "store"
    calibration = write_photos(tmp_path / "calibration", 40)
    flags = ["--precision", "int8", "--calibration", str(calibration), "--min-agreement", "0.95"]
    assert build_main(["build", "--model-store", str(store), "--name", "small", *flags, *model_files(tmp_path)]) == 0
    with zipfile.ZipFile(store / "small.mar") as archive:
        int8 = onnxruntime.InferenceSession(archive.read("classify.onnx"), providers=["CPUExecutionProvider"])
        pt = torch.jit.load(io.BytesIO(archive.read("small.pt"))).eval()
    photos = sorted(write_photos(tmp_path / "new", 9, seed=5).rglob("*.png"))  # PNG: the same pixels everywhere
    with LocalTorchServe(tmp_path / "torchserve", store, models=("small=small.mar",)) as server:
        answers = []
        for path in photos:
            response = server.client.predict("small", path.read_bytes())
            assert response.status == 200, response.body
            answers.append(response.json())
        log = (server.workdir / "logs" / "model_log.log").read_text()
    differs_from_fp32 = False
    for path, answer in zip(photos, answers, strict=True):
        crop = pt.preprocess(decode_upright_rgb(path)).unsqueeze(0)
        expected = int8.run(None, {"images": crop.numpy()})[0][0]
        assert list(answer) == [CLASSES[i] for i in np.argsort(-expected, kind="stable")[: len(answer)]]
        assert np.allclose([answer[c] for c in answer], [expected[CLASSES.index(c)] for c in answer], atol=1e-6)
        fp32 = pt.classify(crop)[0].numpy()
        differs_from_fp32 |= bool(np.abs(fp32 - expected).max() > 1e-5)  # 4e-5 to 5e-4 on these photos
    assert differs_from_fp32  # the workers ran the int8 file, not the fp32 .pt
    loaded = [line for line in log.splitlines() if "classify in " in line and "small.pt" in line]
    assert len(loaded) >= 2, log[-2000:]
    assert all("classify in onnxruntime, int8 calibrated on 20 photos, top-1 agreement with fp32" in x for x in loaded)
    assert all("on 20 held-out photos" in line for line in loaded)
    assert "runtime onnxruntime unavailable" not in log
