"""The Dockerfile `deploy` writes: the project's stack, every serving pin of requirements.txt, the layout baked in
at the mount path, the command the manifests run; for kserve, KServe's wrapper from the official kfs image. No
container engine runs here: the same pins run in this venv (every test), which test_pins_are_this_venvs checks."""

import importlib.metadata
import json
import re
import zipfile
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import torchvision.transforms as T
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from mar_builder import cli
from mar_builder.constants import REPO_ROOT
from mar_builder.deploy.dockerfile import SERVING_PACKAGES
from mar_builder.deploy.manifests import security_context, torchserve_args


def stand_in_mar(path: Path, pt: Path | None = None) -> Path:
    """What deploy reads from a .mar: its manifest, and the .pt it names when `pt` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    model = {"modelName": "landmarks", "modelVersion": "1.0"}
    with zipfile.ZipFile(path, "w") as archive:
        if pt is not None:
            model["serializedFile"] = pt.name
            archive.write(pt, pt.name)
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": model}))
    return path


def written_dockerfile(tmp_path: Path, target: str) -> str:
    out = tmp_path / target
    mar = stand_in_mar(tmp_path / "store" / "landmarks.mar")
    assert cli.main(["deploy", target, "--out", str(out), "--name", "landmarks", "--mar", str(mar)]) == 0
    return (out / "Dockerfile").read_text()


def instructions(text: str) -> List[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


def pip_pins(text: str) -> Dict[str, Requirement]:
    """Every requirement the Dockerfile's `pip install` lines name, by canonical name."""
    pins = {}
    for line in instructions(text):
        if line.startswith("RUN pip install"):
            for token in line.split()[3:]:
                if not token.startswith("-") and not token.startswith("http"):
                    requirement = Requirement(token.strip('"'))
                    pins[canonicalize_name(requirement.name)] = requirement
    return pins


def project_requirements() -> Dict[str, Requirement]:
    found = {}
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def exact(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", requirement
    return specifier.version


@pytest.mark.parametrize("target", ["kserve", "kubernetes"])
def test_every_serving_pin_of_requirements_txt_is_in_the_dockerfile(tmp_path, target):
    text = written_dockerfile(tmp_path, target)
    pins = pip_pins(text)
    required = project_requirements()
    for package in map(canonicalize_name, SERVING_PACKAGES):
        assert package in pins, f"{package} is not installed by the Dockerfile"
        version = exact(pins[package])
        assert required[package].specifier.contains(version, prereleases=True), (package, version)
        if any(s.operator == "==" for s in required[package].specifier):
            assert version == exact(required[package]), package
    lines = instructions(text)
    assert "FROM python:3.11-slim-bookworm" in lines
    assert any("openjdk-17-jre-headless" in line for line in lines)
    assert f"RUN useradd -m -u {security_context()['runAsUser']} model-server" in " ".join(lines)
    assert "COPY --chown=model-server config/ /mnt/models/config/" in lines
    assert "COPY --chown=model-server model-store/ /mnt/models/model-store/" in lines
    command = json.loads(next(line for line in lines if line.startswith("CMD "))[4:])
    if target == "kubernetes":
        manifest = yaml.safe_load_all((tmp_path / target / "kubernetes.yaml").read_text())
        container = next(iter(manifest))["spec"]["template"]["spec"]["containers"][0]
        assert command == container["args"] == torchserve_args(foreground=True)
        assert not any(line.startswith("ENTRYPOINT") for line in lines)
        assert not (tmp_path / target / "kserve-entrypoint.sh").exists()
    else:
        # KServe's runtime passes torchserve_args(); the wrapper's entrypoint runs them, then the wrapper.
        assert command == torchserve_args()
        assert lines[0] == "FROM pytorch/torchserve-kfs:0.12.0 AS kserve-wrapper"
        assert 'ENTRYPOINT ["/usr/local/bin/kserve-entrypoint.sh"]' in lines
        assert "COPY kserve-entrypoint.sh /usr/local/bin/kserve-entrypoint.sh" in lines
        assert any(line.startswith("COPY --from=kserve-wrapper /home/model-server/kserve_wrapper") for line in lines)
        # The wrapper's venv: kserve 0.13.0 (pytorch/serve v0.12.0, kubernetes/kserve/requirements.txt).
        wrapper = next(line for line in lines if "kserve-venv/bin/pip install" in line)
        assert wrapper.split()[-1] == '"kserve[storage]==0.13.0"'
        entrypoint = (tmp_path / target / "kserve-entrypoint.sh").read_text()
        assert 'eval "$@"' in entrypoint and entrypoint.rstrip().endswith("kserve_wrapper/__main__.py")


def test_pins_are_this_venvs(tmp_path):
    """What ran instead of the image: these very versions, in the venv every test runs in."""
    for package, requirement in pip_pins(written_dockerfile(tmp_path, "kubernetes")).items():
        installed = Version(importlib.metadata.version(package))
        assert installed.public.split("+")[0] == exact(requirement), package


def test_deploy_refuses_an_archive_the_official_images_cannot_load(tmp_path, capsys):
    """A scripted T.Resize carries F.interpolate's lanczos branch: torch 2.4.0 cannot load it. Deploy names the
    operator and what to do; with --image (the user's own image, e.g. from the Dockerfile) it writes the layout."""
    pt = tmp_path / "resize.pt"
    torch.jit.script(torch.nn.Sequential(T.Resize([8]))).save(str(pt))
    mar = stand_in_mar(tmp_path / "store" / "landmarks.mar", pt)
    args = ["deploy", "kubernetes", "--out", str(tmp_path / "out"), "--name", "landmarks", "--mar", str(mar)]
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "aten::_upsample_lanczos2d_aa" in err, err
    assert "which torch 2.4.0 does not have" in err and "pass --image NAME" in err
    assert not (tmp_path / "out").exists()
    assert cli.main([*args, "--image", "registry.example/landmarks:1"]) == 0
    assert (tmp_path / "out" / "Dockerfile").is_file()
