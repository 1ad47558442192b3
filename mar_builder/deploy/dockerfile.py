"""The Dockerfile `deploy` writes beside the layout: the stack this project validates (Python 3.11, the serving
packages of requirements.txt at their pins, Java 17) with the layout baked in, and for KServe its wrapper.

TorchServe's official 0.12.0 images carry Python 3.9 and torch 2.4.0 without ONNX Runtime or simplejpeg: the
archive runs there on its .pt and Pillow (docs/images.md). This image runs it as `make test` does.
"""

import importlib.metadata
from pathlib import Path
from typing import List

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ..constants import REPO_ROOT
from ..errors import SettingsError
from .manifests import INFERENCE_PORT, KSERVE_RUNTIME_VERSION, MANAGEMENT_PORT, METRICS_PORT, MOUNT_PATH

PYTHON_IMAGE = "python:3.11-slim-bookworm"  # the project's Python (pyproject.toml: >=3.11,<3.12); Debian 12
JAVA_PACKAGE = "openjdk-17-jre-headless"  # TorchServe 0.12's frontend needs Java 11+; the official images carry 17
# What TorchServe and our handler import in a worker; the rest of requirements.txt builds archives.
SERVING_PACKAGES = (
    "torch",
    "torchvision",
    "torchserve",
    "torch-model-archiver",
    "pyyaml",
    "pillow",
    "simplejpeg",
    "onnxruntime",
)
# PyTorch's CPU wheels (PyPI's torch for Linux is the CUDA build, about 3 GB more): `torch==X` takes X+cpu there.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# KServe's wrapper (kserve_wrapper/ with its compiled gRPC stubs) comes from the official KServe image of our
# TorchServe. It needs the kserve its requirements.txt pins (pytorch/serve v0.12.0, kubernetes/kserve/
# requirements.txt), which wants protobuf<4 where onnxruntime 1.32 wants >=4.25.8 (pip finds no common set):
# the wrapper, a process of its own that talks to TorchServe over HTTP and gRPC, gets a venv of its own.
KSERVE_IMAGE = f"pytorch/torchserve-kfs:{KSERVE_RUNTIME_VERSION}"
KSERVE_WRAPPER_PACKAGES = ("kserve[storage]==0.13.0",)
KSERVE_WRAPPER_VENV = "/home/model-server/kserve-venv"
MODEL_SERVER_UID = 1000  # manifests.security_context's runAsUser, as in the official images
DOCKERFILE = "Dockerfile"
ENTRYPOINT = "kserve-entrypoint.sh"


def kserve_entrypoint() -> str:
    """The kfs image's dockerd-entrypoint.sh (pytorch/serve v0.12.0, kubernetes/kserve/) with the wrapper's venv:
    run the arguments (KServe's runtime passes `torchserve --start ...`), then the wrapper in the foreground."""
    return (
        "#!/bin/bash\n"
        "# Written by `mar-builder deploy kserve`: TorchServe as the arguments say, then KServe's wrapper.\n"
        "set -e\n"
        'eval "$@"\n'
        f"exec {KSERVE_WRAPPER_VENV}/bin/python /home/model-server/kserve_wrapper/__main__.py\n"
    )


def serving_pins(requirements: Path = REPO_ROOT / "requirements.txt") -> List[str]:
    """`name==version` for each of SERVING_PACKAGES: requirements.txt's pin, or where it gives a range
    (pyyaml>=6) the version installed here, which the tests ran on. Raises SettingsError when requirements.txt
    lacks one of them or the installed version is outside its range."""
    found = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    pins = []
    for package in SERVING_PACKAGES:
        requirement = found.get(canonicalize_name(package))
        if requirement is None:
            raise SettingsError(f"{requirements} does not name {package}, which the served archive needs")
        exact = [s.version for s in requirement.specifier if s.operator == "=="]
        if exact:
            pins.append(f"{requirement.name}=={exact[0]}")
            continue
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            raise SettingsError(f"{package} ({requirement}) is not installed here: make venv") from None
        if not requirement.specifier.contains(installed, prereleases=True):
            raise SettingsError(f"{package} {installed} is installed here, outside {requirement}: make venv")
        pins.append(f"{requirement.name}=={installed}")
    return pins


def dockerfile(target: str, name: str, pins: List[str]) -> str:
    """The Dockerfile text for `deploy <target>` of model `name`, built in the layout's folder (config/,
    model-store/ beside it), installing exactly `pins`."""
    kserve = target == "kserve"
    install = " \\\n        ".join(pins)
    lines = [
        f"# Written by `mar-builder deploy {target}`: the stack mar-builder's tests run (Python 3.11, the serving pins",
        "# of its requirements.txt, Java 17): classify in ONNX Runtime, JPEGs through simplejpeg. Build it here:",
        f"#   docker build -t {name}-torchserve .",
        "# then pass --image to deploy (or edit the manifest). The layout is baked in at the mount path; the pod's",
        "# volume (Kubernetes) or storageUri (KServe) mounts over it with the same files.",
    ]
    if kserve:
        lines += ["", f"FROM {KSERVE_IMAGE} AS kserve-wrapper"]
    lines += [
        "",
        f"FROM {PYTHON_IMAGE}",
        "ENV PYTHONUNBUFFERED=TRUE",
        "RUN apt-get update \\",
        f"    && apt-get install -y --no-install-recommends {JAVA_PACKAGE} \\",
        "    && rm -rf /var/lib/apt/lists/*",
        f"RUN pip install --no-cache-dir --extra-index-url {TORCH_CPU_INDEX} \\",
        f"        {install}",
    ]
    if kserve:
        wrapper_install = " ".join(f'"{p}"' for p in KSERVE_WRAPPER_PACKAGES)
        lines += [
            "# KServe's wrapper listens on 8080 and forwards to TorchServe on 8085, as in the torchserve-kfs image;",
            "# its kserve pins protobuf<4, onnxruntime needs >=4.25.8: a venv of its own.",
            f"RUN python -m venv {KSERVE_WRAPPER_VENV} && {KSERVE_WRAPPER_VENV}/bin/pip install --no-cache-dir \\",
            f"        {wrapper_install}",
            "COPY --from=kserve-wrapper /home/model-server/kserve_wrapper /home/model-server/kserve_wrapper",
            f"COPY {ENTRYPOINT} /usr/local/bin/{ENTRYPOINT}",
        ]
    lines += [
        f"RUN useradd -m -u {MODEL_SERVER_UID} model-server && mkdir -p /home/model-server/tmp \\",
        "    && chown -R model-server /home/model-server",
        f"COPY --chown=model-server config/ {MOUNT_PATH}/config/",
        f"COPY --chown=model-server model-store/ {MOUNT_PATH}/model-store/",
        "USER model-server",
        "WORKDIR /home/model-server",
        "ENV TEMP=/home/model-server/tmp",
        f"EXPOSE {INFERENCE_PORT} {MANAGEMENT_PORT} {METRICS_PORT}",
    ]
    serve = [
        "torchserve",
        "--start",
        f"--model-store={MOUNT_PATH}/model-store",
        f"--ts-config={MOUNT_PATH}/config/config.properties",
    ]
    if kserve:
        # The entrypoint runs its arguments (TorchServe, in the background), then the wrapper in the foreground.
        lines += [f'ENTRYPOINT ["/usr/local/bin/{ENTRYPOINT}"]', f"CMD {_json_list(serve)}"]
    else:
        lines += [f"CMD {_json_list([*serve[:2], '--foreground', *serve[2:]])}"]
    return "\n".join(lines) + "\n"


def write_dockerfile(folder: Path, target: str, name: str) -> List[Path]:
    """Write folder/Dockerfile (and for kserve the wrapper's entrypoint beside it); returns the files written."""
    written = [folder / DOCKERFILE]
    written[0].write_text(dockerfile(target, name, serving_pins()))
    if target == "kserve":
        written.append(folder / ENTRYPOINT)
        written[1].write_text(kserve_entrypoint())
        written[1].chmod(0o755)
    return written


def _json_list(items: List[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"
