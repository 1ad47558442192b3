"""int8 classify.onnx: NNCF's accuracy control on generated photos, the agreement it records, and the refusal."""

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from calibration_data import small_pt, write_photos

from mar_builder.archive import precision
from mar_builder.errors import ExportError
from mar_builder.model.calibration_photos import load_calibration_split
from mar_builder.model.int8_quantize import int8_operation_counts, quantize_classify
from mar_builder.model.onnx_export import export_onnx


def load(path):
    return torch.jit.load(str(path), map_location="cpu").eval()


@pytest.fixture
def fp32(tmp_path):
    """(the .pt, its fp32 classify.onnx, the split of 60 generated photos)."""
    pt = load(small_pt(tmp_path / "small.pt"))
    onnx_path = export_onnx(pt, tmp_path / "classify.onnx")
    return pt, onnx_path, load_calibration_split(write_photos(tmp_path / "photos", 60), pt)


def test_the_build_side_and_the_handler_use_the_same_precision_names():
    import handler_settings

    assert (precision.FP32, precision.INT8) == (handler_settings.FP32, handler_settings.INT8)
    assert set(precision.PRECISIONS) == set(handler_settings.PRECISIONS)


def test_accuracy_control_keeps_the_costliest_operations_in_fp32_until_the_target_holds(fp32, tmp_path):
    """Plain int8 changes 2 of the 30 held-out answers here: reaching 1.0 takes some convolutions back to fp32."""
    pt, onnx_path, split = fp32
    result = quantize_classify(onnx_path, split, 1.0, tmp_path / "int8" / "classify.onnx")
    assert (result.calibration_photos, result.held_out_photos) == (30, 30)
    assert result.agreement_top1 == 1.0
    model = onnx.load(str(result.path))
    assert any(node.op_type == "QuantizeLinear" for node in model.graph.node)
    assert (result.int8_operations, result.weighted_operations) == int8_operation_counts(model)
    assert 1 <= result.int8_operations < result.weighted_operations
    # Measured again here: the int8 file against the .pt's own classify, on the held-out crops (the recorded
    # agreement) and on the calibration ones (the target holds there too).
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for crops, expected in ((np.stack(split.held_out), result.agreement_top1), (np.stack(split.calibration), 1.0)):
        int8_top1 = session.run(None, {"images": crops})[0].argmax(axis=1)
        fp32_top1 = pt.classify(torch.from_numpy(crops)).argmax(dim=1).numpy()
        assert (int8_top1 == fp32_top1).mean() == pytest.approx(expected)


def test_a_target_not_reached_is_refused_and_nothing_is_written(tmp_path):
    """Activation outliers in two layers: one round of accuracy control cannot bring every answer back."""
    pt = load(small_pt(tmp_path / "outliers.pt", outliers=True))
    onnx_path = export_onnx(pt, tmp_path / "outliers.onnx")
    split = load_calibration_split(write_photos(tmp_path / "photos", 60), pt)
    output = tmp_path / "int8" / "classify.onnx"
    output.parent.mkdir()
    with pytest.raises(
        ExportError,
        match=r"int8 reached top-1 agreement [01]\.\d{4} with fp32 on 30 held-out photos \([01]\.\d{4} on all 60, "
        r"calibration ones included\); \d+ of \d+ convolutions and matrix products in int8 after at most 1 rounds "
        r"of accuracy control; below --min-agreement 1: nothing packed",
    ):
        quantize_classify(onnx_path, split, 1.0, output, max_rounds=1)
    assert list(output.parent.iterdir()) == []


def test_every_quantized_convolution_and_addition_runs_as_an_int8_kernel_in_onnx_runtime(tmp_path):
    """A MobileNetV2 (ReLU6, depthwise convolutions, linear bottlenecks and residual additions, like the default
    EfficientNet-Lite0): in ONNX Runtime's optimized graph no Conv or Add is left in float."""
    from torchvision.models import mobilenet_v2

    from mar_builder.model.export import export_predictor
    from mar_builder.model.predictor import Predictor
    from mar_builder.model.recipe import Recipe

    torch.manual_seed(0)
    network = mobilenet_v2(num_classes=5, width_mult=0.25).eval()
    predictor = Predictor(network, [f"c{i}" for i in range(5)], Recipe(resize=(40,), crop=(32, 32)))
    export_predictor(predictor, tmp_path / "m.pt")
    pt = load(tmp_path / "m.pt")
    onnx_path = export_onnx(pt, tmp_path / "classify.onnx")
    split = load_calibration_split(write_photos(tmp_path / "photos", 20), pt)
    result = quantize_classify(onnx_path, split, 0.01, tmp_path / "int8" / "classify.onnx")
    model = onnx.load(str(result.path))
    convolutions = sum(node.op_type == "Conv" for node in model.graph.node)
    additions = sum(node.op_type == "Add" for node in model.graph.node)
    # Every convolution in int8; the classifier layer (Gemm) stays fp32, as its output is not quantized again.
    assert (result.int8_operations, result.weighted_operations) == (convolutions, convolutions + 1)
    quantizers = [node for node in model.graph.node if node.op_type == "QuantizeLinear"]
    assert {_zero_point_type(model, node) for node in quantizers} == {np.uint8}

    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnxruntime.InferenceSession(str(result.path), options, providers=["CPUExecutionProvider"])
    optimized = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert (optimized.count("QLinearConv"), optimized.count("QLinearAdd")) == (convolutions, additions)
    assert not {"Conv", "FusedConv", "Add"} & set(optimized)


def test_unsigned_activations_dequantize_to_the_same_values(fp32, tmp_path):
    """int8 zero point z and uint8 zero point z + 128 over the same scale: the same answers, bit for bit."""
    import nncf

    from mar_builder.model.int8_quantize import unsigned_activations

    _, onnx_path, split = fp32
    signed = nncf.quantize(onnx.load(str(onnx_path)), nncf.Dataset(split.calibration, lambda c: {"images": c[None]}))
    assert any(_zero_point_type(signed, n) == np.int8 for n in signed.graph.node if n.op_type == "QuantizeLinear")
    crops = np.stack(split.held_out)
    before = _run(signed, crops)
    unsigned = unsigned_activations(signed)
    assert all(_zero_point_type(unsigned, n) == np.uint8 for n in unsigned.graph.node if n.op_type == "QuantizeLinear")
    read = {name for node in unsigned.graph.node for name in node.input}
    assert all(tensor.name in read for tensor in unsigned.graph.initializer)  # no unused int8 zero points left
    np.testing.assert_array_equal(_run(unsigned, crops), before)


def _zero_point_type(model, node):
    from onnx import numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    return numpy_helper.to_array(initializers[node.input[2]]).dtype.type


def _run(model, crops):
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": crops})[0]
