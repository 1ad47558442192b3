"""int8 classify.onnx: NNCF's post-training quantization with accuracy control, on the user's own photos.

NNCF (`nncf.quantize_with_accuracy_control`, docs/int8.md says why this library) quantizes classify.onnx
with the calibration photos, measures top-1 agreement with the fp32 file on all the photos, and while
the agreement is below the target puts back in fp32 the groups of operations whose quantization
costs the most agreement. This module gives it the photos and the metric, then measures the result
itself, as a worker runs it, and refuses it when the target is not reached on the held-out photos or
on all of them.

Two steps around NNCF make the file run as int8 kernels in ONNX Runtime, not as float operations between
QuantizeLinear/DequantizeLinear pairs: ONNX Runtime's own quantization preprocessing first (it folds the
export's shape arithmetic, so padding is a Conv attribute and not a Pad between a DequantizeLinear and its
Conv), and uint8 activations after (`unsigned_activations`).
"""

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List, Sequence, Tuple

import numpy as np

from ..errors import ExportError
from .calibration_photos import CalibrationSplit
from .export import staged_file

logger = logging.getLogger(__name__)

# The operations whose weights int8 quantizes: a node of these types is in int8 when its weight comes
# through a DequantizeLinear node, and in fp32 when accuracy control put it back.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Accuracy control's rounds at most (each puts one group of operations back in fp32, or steps back):
# beyond this much fp32 an int8 archive keeps little of its speed, so the build is refused instead.
MAX_ACCURACY_CONTROL_ROUNDS = 24
# Photos that rank the groups of operations (NNCF's ranking_subset_size): those whose answers int8
# moves most. Each of the ~50 groups of EfficientNet-Lite0 is ranked by running them once.
RANKING_PHOTOS = 16
# Top-1 agreement alone ties almost every group (few photos change class), so the metric NNCF ranks by
# subtracts this much times the mean total variation distance to fp32's probabilities: less than one
# photo in a million, so the agreement the target is checked on moves by less than one photo.
TIE_BREAK = 1e-6
# Crops per ONNX Runtime call while measuring (static int8 ranges: no image changes another's answer).
BATCH_SIZE = 16


@dataclass(frozen=True)
class Int8Result:
    """What the int8 classify.onnx was measured to be; model-config.yaml records it."""

    path: Path  # the int8 classify.onnx (QuantizeLinear/DequantizeLinear pairs, weights stored as int8)
    calibration_photos: int  # photos whose activations set the int8 ranges
    held_out_photos: int  # photos the agreement is measured on, none of them used to calibrate
    agreement_top1: float  # fraction of held-out photos whose int8 top-1 class is the fp32 one
    int8_operations: int  # of WEIGHTED_OPS, those quantized
    weighted_operations: int  # all WEIGHTED_OPS nodes in the graph


def quantize_classify(
    fp32_onnx: Path,
    split: CalibrationSplit,
    min_agreement: float,
    output: Path,
    max_rounds: int | None = None,
) -> Int8Result:
    """Write the int8 quantization of `fp32_onnx` (classify.onnx, onnx_export's names) to `output`.

    Calibrates on `split.calibration`, keeps in fp32 what NNCF's accuracy control finds most costly
    until the top-1 agreement with `fp32_onnx` is at least `min_agreement` (a fraction) both on
    `split.held_out` (the independent measure, recorded) and on all the photos, calibration ones
    included, within `max_rounds` rounds (None: MAX_ACCURACY_CONTROL_ROUNDS). Raises ExportError,
    naming the agreements reached, when the target is not met; `output` is then not written.

    Why all the photos too: a calibration photo is one of many that set int8's ranges, so int8 changes
    its answer about as often as an unseen photo's, and twice the photos measure twice as finely. On the
    default model, calibrated on the 200 shared photos, int8 kept all 100 held-out answers but changed
    3 of the 100 calibration ones.
    """
    import onnx

    nncf = _import_nncf()
    from nncf.parameters import DropType
    from nncf.quantization.advanced_parameters import (
        AdvancedAccuracyRestorerParameters,
        AdvancedQuantizationParameters,
        OverflowFix,
        QuantizationParameters,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    max_rounds = MAX_ACCURACY_CONTROL_ROUNDS if max_rounds is None else max_rounds
    fp32_model = onnx.load(str(fp32_onnx))
    prepared = _prepared_for_quantization(fp32_onnx)
    input_name = fp32_model.graph.input[0].name
    photos = [*split.calibration, *split.held_out]  # the held-out ones last: found[len(split.calibration):]
    fp32_probabilities = probabilities(_session(fp32_model.SerializeToString()), input_name, photos)
    reference = [int(p.argmax()) for p in fp32_probabilities]

    def agreement_with_fp32(model: Any, items: Iterable[Tuple[np.ndarray, np.ndarray]]) -> Tuple[float, List[float]]:
        """NNCF's validation_fn: per item 1.0 where the top-1 is fp32's (else 0.0), less TIE_BREAK x the total
        variation distance between the two probability rows; and their mean, the metric."""
        items = list(items)
        # Measured as ONNX Runtime will serve it: with uint8 activations its integer kernels run, whose
        # rounding differs from the float path NNCF's signed pairs take, enough to flip a near-tie.
        served = unsigned_activations(_copy(model))
        found = probabilities(_session(served.SerializeToString()), input_name, [crop for crop, _ in items])
        values = [
            float(got.argmax() == expected.argmax()) - TIE_BREAK * 0.5 * float(np.abs(got - expected).sum())
            for got, (_, expected) in zip(found, items, strict=True)
        ]
        return sum(values) / len(values), values

    logger.info(
        "quantizing classify to int8 with NNCF: %d calibration photos, then accuracy control until top-1 "
        "agreement with fp32 is at least %.4f on the %d held-out photos and on all %d",
        len(split.calibration),
        min_agreement,
        len(split.held_out),
        len(photos),
    )
    try:
        int8_model = nncf.quantize_with_accuracy_control(
            prepared,
            nncf.Dataset(split.calibration, lambda crop: {input_name: crop[np.newaxis]}),
            nncf.Dataset(list(zip(photos, fp32_probabilities, strict=True))),
            agreement_with_fp32,
            # Agreement with fp32 is 1.0 for fp32 itself: the drop allowed is what the target leaves, and
            # TIE_BREAK (the metric's tie-breaker is at most that): with fewer than a million photos no
            # agreement lies in [target - TIE_BREAK, target), and the file is measured again below.
            max_drop=1.0 - min_agreement + TIE_BREAK,
            drop_type=DropType.ABSOLUTE,
            preset=nncf.QuantizationPreset.PERFORMANCE,
            ignored_scope=nncf.IgnoredScope(names=[_classifier_layer(prepared)]),
            target_device=nncf.TargetDevice.CPU,
            subset_size=len(split.calibration),
            # Bias correction from the whole calibration set, not NNCF's fast per-layer estimate: measured on
            # the default model, the mean total variation distance to fp32 fell from 0.042 to 0.037.
            fast_bias_correction=False,
            # int8 weights in 7 bits: AVX2 and AVX-512 CPUs without VNNI add pairs of u8 x s8 products in
            # 16 bits, which 8-bit weights can overflow; with 7 the integer results are the same on every
            # CPU, so the agreement measured here holds on the serving machine too.
            # One scale per activation tensor: ONNX Runtime's QLinearConv takes a single input scale, so a
            # per-channel activation (NNCF's default before depthwise convolutions) keeps its Conv in float.
            advanced_quantization_parameters=AdvancedQuantizationParameters(
                overflow_fix=OverflowFix.ENABLE,
                activations_quantization_params=QuantizationParameters(per_channel=False),
                # Activation ranges from histograms, not the extremes seen: on the default model the mean
                # total variation distance to fp32 fell from 0.035 to 0.0345, and 2 of 100 unseen
                # answers that int8 had changed came back (docs/int8.md).
                activations_range_estimator_params=RangeEstimatorParametersSet.HISTOGRAM,
            ),
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                max_num_iterations=max_rounds, ranking_subset_size=RANKING_PHOTOS, num_ranking_workers=1
            ),
        )
    except Exception as e:  # NNCF raises its own types for graphs it cannot quantize
        raise ExportError(f"NNCF could not quantize classify.onnx to int8: {type(e).__name__}: {e}") from e
    int8_model = unsigned_activations(int8_model)
    quantized, weighted = int8_operation_counts(int8_model)
    # Measured again as a worker runs it (one thread, the file as saved), not as NNCF last saw it.
    with staged_file(output) as tmp:
        onnx.save(int8_model, str(tmp))
        found = probabilities(_session(str(tmp), threads=1), input_name, photos)
        same = [int(p.argmax()) == r for p, r in zip(found, reference, strict=True)]
        held_out = same[len(split.calibration) :]
        agreement, overall = sum(held_out) / len(held_out), sum(same) / len(same)
        measured = (
            f"top-1 agreement {agreement:.4f} with fp32 on {len(held_out)} held-out photos ({overall:.4f} on all "
            f"{len(same)}, calibration ones included)"
        )
        if min(agreement, overall) < min_agreement:
            raise ExportError(
                f"int8 reached {measured}; {quantized} of {weighted} convolutions and matrix products in int8 "
                f"after at most {max_rounds} rounds of accuracy control; below --min-agreement {min_agreement:g}: "
                "nothing packed. More varied calibration photos, a lower --min-agreement, or the fp32 default may do"
            )
    logger.info("int8 classify: %s; %d of %d convolutions and matrix products in int8", measured, quantized, weighted)
    return Int8Result(output, len(split.calibration), len(held_out), agreement, quantized, weighted)


def unsigned_activations(model: Any) -> Any:
    """The int8 onnx.ModelProto with every signed activation quantizer made unsigned, in place, and returned.

    NNCF quantizes activations that can be negative (residual sums, linear bottleneck outputs) to int8,
    the others to uint8. ONNX Runtime's CPU provider fuses a QuantizeLinear/DequantizeLinear group into
    QLinearConv or QLinearAdd when its activations are uint8: on the default model (EfficientNet-Lite0),
    with NNCF's int8 activations 14 of its 49 convolutions and all 9 residual additions stayed float,
    between 30 layout Transposes; made uint8, all of them fuse. Each QuantizeLinear with an int8 zero
    point, and every DequantizeLinear reading it, gets a uint8 zero point 128 higher and the same scale:
    q_uint8 = q_int8 + 128 over the same 256 levels, so every dequantized value is unchanged. Weights
    (DequantizeLinear on a stored int8 tensor, no QuantizeLinear) stay int8, as the u8 x s8 kernels want.
    """
    from onnx import numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    readers: dict = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    retyped = set()
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[2] not in initializers:
            continue
        zero_point = numpy_helper.to_array(initializers[node.input[2]])
        if zero_point.dtype != np.int8:
            continue
        unsigned_name = f"{node.input[2]}_uint8"
        if unsigned_name not in initializers:
            unsigned = (zero_point.astype(np.int16) + 128).astype(np.uint8)
            initializers[unsigned_name] = numpy_helper.from_array(unsigned, unsigned_name)
            graph.initializer.append(initializers[unsigned_name])
        node.input[2] = unsigned_name
        for reader in readers.get(node.output[0], []):
            if reader.op_type != "DequantizeLinear":
                raise ExportError(f"int8 classify.onnx: {node.name} feeds a {reader.op_type}, not a DequantizeLinear")
            reader.input[2] = unsigned_name
        retyped.add(node.output[0])
    # Their recorded element type was int8; ONNX Runtime infers uint8 again without it.
    kept = [info for info in graph.value_info if info.name not in retyped]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    # The int8 zero points nothing reads any more (ONNX Runtime would warn about each, in every worker).
    read = {name for node in graph.node for name in node.input}
    used = [tensor for tensor in graph.initializer if tensor.name in read]
    del graph.initializer[:]
    graph.initializer.extend(used)
    return model


def int8_operation_counts(model: Any) -> Tuple[int, int]:
    """(quantized, all) nodes of WEIGHTED_OPS in an onnx.ModelProto: quantized when a weight input comes
    from a DequantizeLinear node."""
    dequantized = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    weighted = [node for node in model.graph.node if node.op_type in WEIGHTED_OPS]
    quantized = sum(len(node.input) > 1 and node.input[1] in dequantized for node in weighted)
    return quantized, len(weighted)


def probabilities(session: Any, input_name: str, crops: Sequence[np.ndarray]) -> List[np.ndarray]:
    """classify's probabilities (classes,) for each crop (3, crop, crop), in batches of BATCH_SIZE."""
    rows: List[np.ndarray] = []
    for start in range(0, len(crops), BATCH_SIZE):
        batch = np.stack(crops[start : start + BATCH_SIZE])
        rows.extend(session.run(None, {input_name: batch})[0])
    return rows


def _classifier_layer(model: Any) -> str:
    """The name of the last of WEIGHTED_OPS in the graph (nodes are stored in topological order): the
    classifier layer whose logits the probabilities come from. It stays fp32: ONNX Runtime has no int8
    kernel for a layer whose output is not quantized again (the softmax takes floats), so in int8 it
    would only dequantize its weights on every call (0.6 ms of the default model's ~10), and its
    rounding would move the probabilities directly."""
    weighted = [node.name for node in model.graph.node if node.op_type in WEIGHTED_OPS]
    if not weighted:
        raise ExportError("classify.onnx has no convolution or matrix product to quantize to int8")
    return weighted[-1]


def _copy(model: Any) -> Any:
    """A deep copy of an onnx.ModelProto (unsigned_activations edits its argument)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _prepared_for_quantization(fp32_onnx: Path) -> Any:
    """classify.onnx after ONNX Runtime's quantization preprocessing (`quant_pre_process`: shape inference
    and its basic graph optimizations, as ONNX Runtime's quantization docs ask): the export's run-time
    shape arithmetic for "same" padding becomes constant and folds into each Conv, which then has a
    DequantizeLinear as its direct input and can fuse into QLinearConv. Numerically the same network."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="mar-builder-int8-") as folder:
        prepared = Path(folder) / "classify.prepared.onnx"
        quant_pre_process(str(fp32_onnx), str(prepared))
        return onnx.load(str(prepared))


def _session(model: "bytes | str", threads: int = 0) -> Any:
    """An ONNX Runtime CPU session; `threads` 0 lets ONNX Runtime choose."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: ONNX Runtime warns about every unused initializer
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _import_nncf() -> Any:
    try:
        import nncf
    except ImportError:
        raise ExportError(
            "--precision int8 needs NNCF: `make venv` installs the pinned one (requirements-int8.txt)"
        ) from None
    return nncf
