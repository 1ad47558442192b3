"""The runtimes that can run a Predictor's `classify` in the workers; torch-free, for the command line.

The handler has the same names (handler/classify_runtime.py; tests/model/test_onnx_export.py keeps them equal).
"""

TORCHSCRIPT = "torchscript"  # the .pt itself
ONNXRUNTIME = "onnxruntime"  # classify.onnx, exported from the .pt at build time
RUNTIMES = (ONNXRUNTIME, TORCHSCRIPT)
# The fastest runtime here that gave the same top-1 as the .pt on all 200 photos of the shared ImageNet
# sample (docs/performance.md).
DEFAULT_RUNTIME = ONNXRUNTIME
ONNX_FILE = "classify.onnx"
