"""The handler's metrics, recorded through TorchServe's real metric cache as a worker would."""

import logging
import re
from pathlib import Path

import pytest
import ts
import yaml
from classifier_handler import ClassifierHandler
from fake_context import METRICS_YAML, FakeContext
from image_variants import encode, sample

CAT_JPEG = encode(sample("chelsea.png"), "JPEG")
# "[METRICS]Name.unit:value|#Dim:value,...|#type:TYPE|#hostname:..." is what the frontend parses.
METRIC_LINE = re.compile(r"\[METRICS\](\w+)\.(\w+):([\d.]+)\|#([^|]*)\|#type:(\w+)\|")


def make_handler(tiny_pt, **handler_settings):
    context = FakeContext(tiny_pt.parent, tiny_pt.name, {"handler": {"topk": 3, **handler_settings}})
    handler = ClassifierHandler()
    handler.initialize(context)
    return handler, context


def emitted(caplog):
    """(name, unit, value, [(dimension, value)], type) for every metric line, and the cache's errors."""
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("ts.metrics")]
    errors = [line for line in lines if "Failed" in line]
    metrics = []
    for line in lines:
        match = METRIC_LINE.search(line)
        if match:
            name, unit, value, dims, kind = match.groups()
            metrics.append((name, unit, float(value), [tuple(d.split(":", 1)) for d in dims.split(",")], kind))
    return metrics, errors


def by_name(metrics, name):
    return [m for m in metrics if m[0] == name]


def test_decode_predict_and_rejections_are_recorded(tiny_pt, caplog):
    handler, context = make_handler(tiny_pt)
    data = [{"body": bytearray(CAT_JPEG)}, {"body": bytearray(b"hello world")}, {"body": bytearray(CAT_JPEG)}]
    with caplog.at_level(logging.INFO, logger="ts.metrics"):
        handler.handle(data, context.with_requests([{}] * 3))
    metrics, errors = emitted(caplog)
    assert errors == []
    decode = by_name(metrics, "ImageDecodeTime")
    assert len(decode) == 2  # one per decoded image; the refused one records a rejection instead
    assert all(m[1] == "Milliseconds" and m[2] > 0 and m[4] == "HISTOGRAM" for m in decode)
    assert decode[0][3] == [("ModelName", "classifier"), ("Level", "Model")]
    (predict,) = by_name(metrics, "PredictTime")  # one per batch
    assert predict[2] > 0 and predict[4] == "HISTOGRAM"
    (rejected,) = by_name(metrics, "RejectedRequests")
    assert rejected[2] == 1 and rejected[4] == "COUNTER"
    assert rejected[3] == [("ErrorType", "InvalidImage"), ("ModelName", "classifier"), ("Level", "Model")]


def test_a_batch_of_refused_requests_counts_each_type_and_predicts_nothing(tiny_pt, caplog):
    handler, context = make_handler(tiny_pt, max_image_pixels=10_000)
    data = [{"body": bytearray(CAT_JPEG)}, {"body": bytearray(b"")}, {"body": {"no": "image"}}]
    with caplog.at_level(logging.INFO, logger="ts.metrics"):
        handler.handle(data, context.with_requests([{}] * 3))
    metrics, errors = emitted(caplog)
    assert errors == []
    types = sorted(dict(m[3])["ErrorType"] for m in by_name(metrics, "RejectedRequests"))
    assert types == ["ImageTooLarge", "InvalidImage", "InvalidRequest"]
    assert by_name(metrics, "PredictTime") == [] and by_name(metrics, "ImageDecodeTime") == []


def declared(path: Path):
    """{(section, type, name): (unit, dimensions)} of a TorchServe metrics YAML."""
    config = yaml.safe_load(path.read_text())
    return {
        (section, kind, entry["name"]): (entry["unit"], entry["dimensions"])
        for section in ("ts_metrics", "model_metrics")
        for kind, entries in config[section].items()
        for entry in entries
    }


def test_every_metric_the_handler_emits_is_declared_with_its_dimensions_in_order(tiny_pt, caplog):
    handler, context = make_handler(tiny_pt, max_image_pixels=10**9)
    data = [{"body": bytearray(CAT_JPEG)}, {"body": bytearray(b"garbage")}]
    with caplog.at_level(logging.INFO, logger="ts.metrics"):
        handler.handle(data, context.with_requests([{}] * 2))
    metrics, _ = emitted(caplog)
    ours = declared(METRICS_YAML)
    assert {m[0] for m in metrics} == {"ImageDecodeTime", "PredictTime", "RejectedRequests"}
    for name, _, _, dims, kind in metrics:
        # The frontend drops undeclared metrics and matches dimension values by position.
        assert ours[("model_metrics", kind.lower(), name)][1] == [d for d, _ in dims], name


def test_torchserves_own_metric_declarations_are_kept():
    default = declared(Path(ts.__file__).parent / "configs" / "metrics.yaml")
    ours = declared(METRICS_YAML)
    assert {key: ours.get(key) for key in default} == default


@pytest.mark.parametrize("setting", ["metrics_mode=prometheus", "metrics_config=metrics.yaml"])
def test_server_config_turns_prometheus_on_with_our_declarations(setting):
    lines = (METRICS_YAML.parent / "config.properties").read_text().splitlines()
    assert setting in lines
