"""The KServe reference files in ../shared/kserve (not part of the project): paths, and a skip where absent."""

import copy
import functools
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

KSERVE_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "kserve"
CRD_FILE = KSERVE_DIR / "serving.kserve.io_inferenceservices.yaml"
RUNTIME_FILE = KSERVE_DIR / "kserve-torchserve.yaml"

needs_kserve_reference = pytest.mark.skipif(
    not CRD_FILE.is_file(),
    reason=f"KServe's CRD and runtime are not in {KSERVE_DIR} (../shared/kserve/SOURCE.md): offline checks skipped",
)


def runtime() -> Dict[str, Any]:
    """KServe's ClusterServingRuntime for TorchServe."""
    return yaml.safe_load(RUNTIME_FILE.read_text())


@functools.lru_cache(maxsize=1)
def _crd() -> Dict[str, Any]:
    # 39,000 lines: the C loader where PyYAML has it, and once per session.
    return yaml.load(CRD_FILE.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.lru_cache(maxsize=2)
def inference_service_validator(version: str = "v1beta1") -> Any:
    """A jsonschema validator for the strict schema below, built once (checking the schema itself is slow)."""
    import jsonschema

    return jsonschema.Draft7Validator(inference_service_schema(version))


def inference_service_schema(version: str = "v1beta1") -> Dict[str, Any]:
    """The CRD's openAPIV3Schema for `version`, made strict as `kubectl apply --validate=strict` is.

    A CRD schema does not forbid unknown fields (the API server prunes or, in strict mode, refuses
    them): every object with declared properties gets additionalProperties false, except where the
    CRD preserves unknown fields.
    """
    crd = copy.deepcopy(_crd())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
    _strict(schema)
    return schema


def _strict(node: Any) -> None:
    if isinstance(node, dict):
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
