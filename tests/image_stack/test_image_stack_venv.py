"""The image stack (`make image-venv`) is what TorchServe 0.12.0's official images carry: Python 3.9, every pin of
requirements-image.txt, and neither onnxruntime nor simplejpeg."""

import json

from image_stack_setup import run_in_image_stack
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mar_builder.constants import REPO_ROOT

INSTALLED = """
import importlib.metadata, json, sys
print(json.dumps({
    "python": list(sys.version_info[:2]),
    "versions": {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()},
}))
"""


def test_the_image_stack_has_exactly_the_images_pins():
    found = json.loads(run_in_image_stack(INSTALLED))
    assert found["python"] == [3, 9]
    versions = {canonicalize_name(name): version for name, version in found["versions"].items()}
    pins = {}
    for line in (REPO_ROOT / "requirements-image.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = requirement
    assert {"torch", "torchvision", "pillow", "numpy", "torchserve", "torch-model-archiver", "pyyaml"} <= set(pins)
    for name, requirement in pins.items():
        assert name in versions, f"{name} is not installed in the image stack"
        assert requirement.specifier.contains(versions[name], prereleases=True), (name, versions[name])
    assert "onnxruntime" not in versions and "simplejpeg" not in versions  # as in the images
