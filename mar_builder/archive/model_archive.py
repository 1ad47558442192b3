"""Pack an exported Predictor and the handler into model_store/<name>.mar with torch-model-archiver."""

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

import yaml

from ..constants import REPO_ROOT
from ..errors import ExportError
from .precision import INT8
from .runtimes import TORCHSCRIPT

if TYPE_CHECKING:
    from ..model.int8_quantize import Int8Result

HANDLER_DIR = REPO_ROOT / "handler"
HANDLER_FILE = "classifier_handler.py"
MODEL_CONFIG_FILE = "model-config.yaml"
logger = logging.getLogger(__name__)


def handler_extra_files(handler_dir: Path = HANDLER_DIR) -> List[Path]:
    """Every module the handler imports: all Python files beside it in handler/."""
    return sorted(p for p in handler_dir.glob("*.py") if p.name != HANDLER_FILE)


def write_model_config(
    destination: Path,
    topk: int,
    runtime: str,
    int8: "Int8Result | None" = None,
    template: Path = HANDLER_DIR / MODEL_CONFIG_FILE,
) -> None:
    """The archived model-config.yaml: the template with this build's handler settings, and for an int8
    classify.onnx its precision, calibration photos and measured agreement (workers log them at start)."""
    config = yaml.safe_load(template.read_text())
    config.setdefault("handler", {}).update(topk=topk, runtime=runtime, **int8_settings(int8))
    header = "# Written by build_mar.sh from handler/model-config.yaml; see the comments there.\n"
    destination.write_text(header + yaml.safe_dump(config, sort_keys=False))


def int8_settings(int8: "Int8Result | None") -> Dict[str, Any]:
    """The handler settings that record an int8 build (none for fp32, the template's precision)."""
    if int8 is None:
        return {}
    return {
        "precision": INT8,
        "calibration_photos": int8.calibration_photos,
        "held_out_photos": int8.held_out_photos,
        "held_out_agreement_top1": round(int8.agreement_top1, 6),
    }


# Captum 0.9 needs Python >= 3.10. TorchServe's official images run the handler on Python 3.9 and carry
# captum 0.6.0 (pytorch/serve v0.12.0 requirements/common.txt), whose InputXGradient is the same: accepted
# as it is, so a worker there installs nothing; another Python 3.9 gets the newest that installs (0.8.0).
CAPTUM_PYTHON39 = 'captum>=0.6.0; python_version < "3.10"'

# pi-heif's newest wheels start at Python 3.10; TorchServe's official images run 3.9, where 1.1.1 is
# the newest with wheels (both LGPL-3.0, decode-only). Either pulls Pillow >= 11.1 (11.3 on 3.9),
# whose wheels also decode AVIF.
PI_HEIF_FOR_PYTHON_39 = 'pi-heif==1.1.1; python_version < "3.10"'


def handler_requirements(runtime: str) -> List[str]:
    """What the handler imports beyond TorchServe, torch and Pillow, pinned to the versions installed here:
    the runtime's package (a worker without it falls back to the .pt), simplejpeg (JPEG decoding;
    without it Pillow decodes the same pixels, slower), captum (explanations; without it they are
    answered 501, predictions unaffected) and pi-heif (HEIC; without it HEIC is refused, with a message that
    says so). captum's and pi-heif's pins hold on Python >= 3.10, with CAPTUM_PYTHON39 and
    PI_HEIF_FOR_PYTHON_39 below it. Packages not installed here are left out."""
    from importlib.metadata import PackageNotFoundError, version

    packages = ([runtime] if runtime != TORCHSCRIPT else []) + ["simplejpeg", "captum", "pi-heif"]
    pinned = []
    for package in packages:
        try:
            installed = version(package)
        except PackageNotFoundError:
            continue
        if package == "captum":
            pinned += [f'captum=={installed}; python_version >= "3.10"', CAPTUM_PYTHON39]
        elif package == "pi-heif":
            pinned += [f'pi-heif=={installed}; python_version >= "3.10"', PI_HEIF_FOR_PYTHON_39]
        else:
            pinned.append(f"{package}=={installed}")
    return pinned


def archiver_command() -> List[str]:
    beside_python = Path(sys.executable).parent / "torch-model-archiver"
    found = str(beside_python) if beside_python.exists() else shutil.which("torch-model-archiver")
    if found is None:
        raise ExportError(
            "torch-model-archiver not found; run `make venv` or `pip install torch-model-archiver==0.12.0`"
        )
    return [found]


def pack_archive(
    pt_path: Path,
    name: str,
    version: str,
    model_store: Path,
    topk: int,
    runtime: str = TORCHSCRIPT,
    runtime_file: Path | None = None,
    int8: "Int8Result | None" = None,
) -> Path:
    """Write model_store/<name>.mar, replacing an older one only once the new one is complete.

    The archive holds the .pt, the handler, model-config.yaml (whose handler.runtime says what runs
    `classify`), `runtime_file` (classify.onnx: fp32, or with `int8` the int8 one) beside the .pt, and a
    requirements.txt of `handler_requirements(runtime)`: TorchServe installs them per model when
    install_py_dep_per_model is true.
    """
    model_store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=model_store) as tmp:
        config = Path(tmp) / MODEL_CONFIG_FILE
        write_model_config(config, topk, runtime, int8)
        extra_files = handler_extra_files() + ([runtime_file] if runtime_file is not None else [])
        command = archiver_command() + [
            "--model-name",
            name,
            "--version",
            version,
            "--serialized-file",
            str(pt_path),
            "--handler",
            str(HANDLER_DIR / HANDLER_FILE),
            "--extra-files",
            ",".join(str(p) for p in extra_files),
            "--config-file",
            str(config),
            "--export-path",
            tmp,
            "--force",
        ]
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("".join(f"{line}\n" for line in handler_requirements(runtime)))
        command += ["--requirements-file", str(requirements)]
        # torch-model-archiver stages the files in $TMPDIR/<name>/ and deletes that folder first, so two
        # builds of one name would delete each other's files: give each build a staging folder of its own.
        staging = Path(tmp) / "staging"
        staging.mkdir()
        env = dict(os.environ, TMPDIR=str(staging))
        logger.info("packing %s.mar with torch-model-archiver", name)
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        built = Path(tmp) / f"{name}.mar"
        if result.returncode != 0 or not built.exists():
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise ExportError(f"torch-model-archiver failed: {detail[-1] if detail else result.returncode}")
        target = model_store / f"{name}.mar"
        os.replace(built, target)
    return target
