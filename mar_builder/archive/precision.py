"""The precisions classify can be built in; torch-free, for the command line.

The handler has the same names (handler/handler_settings.py; tests/model/test_int8_quantize.py keeps them equal).
"""

from ..errors import SettingsError

FP32 = "fp32"  # the exported network as it is
INT8 = "int8"  # classify.onnx quantized by NNCF on the user's photos (mar_builder/model/int8_quantize.py)
PRECISIONS = (FP32, INT8)
# The bar for shipping int8: at most 1 photo in 100 gets a different top-1 class than fp32 gives.
DEFAULT_MIN_AGREEMENT = 0.99


def check_min_agreement(value: float) -> float:
    """--min-agreement as a fraction in (0, 1]; raises SettingsError."""
    if not 0.0 < value <= 1.0:
        raise SettingsError(f"--min-agreement is a fraction in (0, 1] (0.99 = 99 %), got {value}")
    return value
