"""The baseline: the same network packed for TorchServe's stock `image_classifier` handler, with its defaults."""

import json
import subprocess
import tempfile
from pathlib import Path

from mar_builder.archive.model_archive import archiver_command
from mar_builder.errors import ExportError
from mar_builder.model.default_model import imagenet_class_names, load_default_model
from mar_builder.model.export import torchscript_deprecation_acknowledged, trace_network

STOCK_NAME = "stock"


def build_stock_archive(model_store: Path) -> Path:
    """model_store/stock.mar: the traced EfficientNet-Lite0 alone (the stock handler does its own
    preprocessing, with ImageNet's mean and std) and index_to_name.json for its labels."""
    with tempfile.TemporaryDirectory(prefix="stock-") as tmp:
        network = Path(tmp) / "network.pt"
        with torchscript_deprecation_acknowledged():
            trace_network(load_default_model()).save(str(network))
        labels = Path(tmp) / "index_to_name.json"
        labels.write_text(json.dumps({str(i): name for i, name in enumerate(imagenet_class_names())}))
        command = archiver_command() + [
            "--model-name", STOCK_NAME,
            "--version", "1.0",
            "--serialized-file", str(network),
            "--handler", "image_classifier",
            "--extra-files", str(labels),
            "--export-path", str(model_store),
            "--force",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise ExportError(f"torch-model-archiver failed for the stock archive: {result.stderr.strip()[-300:]}")
    return model_store / f"{STOCK_NAME}.mar"


def captum_installed() -> bool:
    """The stock image_classifier handler imports captum (for explanations) when it loads."""
    try:
        import captum  # noqa: F401
    except ImportError:
        return False
    return True
