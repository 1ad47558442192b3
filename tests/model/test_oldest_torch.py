"""The oldest torch a .pt must load on (2.4.0, TorchServe 0.12.0's images): the operator list the build checks
against is that torch's own, the check finds what a scripted F.interpolate drags in, and every kind of .pt the
tool writes loads and answers identically in the image stack's torch."""

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from conftest import TinyCNN, class_names
from image_stack_setup import run_in_image_stack
from torch import nn
from tutorial_predictor import save_tutorial_pt

from mar_builder import cli
from mar_builder.constants import REPO_ROOT
from mar_builder.model.export import export_predictor, random_images
from mar_builder.model.oldest_torch import OLDEST_TORCH, OPERATORS_FILE, missing_in_oldest_torch, operators_of
from mar_builder.model.predictor import Predictor
from mar_builder.model.recipe import Recipe

LANCZOS = "aten::_upsample_lanczos2d_aa.vec"
# In the image stack's Python: each .pt loaded and frozen as the handler does, its answers on the images.
ANSWER_IN_IMAGE_STACK = """
import sys, numpy, torch
images = numpy.load(sys.argv[1])
for path in sys.argv[3:]:
    kept = ["preprocess", "classify", "class_names", "resize_size"]
    m = torch.jit.freeze(torch.jit.load(path).eval(), preserved_attrs=kept)
    with torch.no_grad():
        rows = [m.classify(m.preprocess(torch.from_numpy(image)).unsqueeze(0))[0].numpy() for image in images]
    numpy.save(sys.argv[2] + "/" + path.rsplit("/", 1)[-1] + ".npy", numpy.stack(rows))
print(torch.__version__)
"""


def test_the_operator_list_is_the_image_stacks_torch():
    listed = run_in_image_stack((REPO_ROOT / "scripts" / "oldest_torch_operators.py").read_text())
    assert listed == OPERATORS_FILE.read_text(), f"regenerate {OPERATORS_FILE.name} (see its first lines)"
    assert listed.startswith(f"# Operators of torch {OLDEST_TORCH}+")


def test_a_scripted_resize_calls_lanczos_which_torch_2_4_lacks_and_the_predictor_does_not():
    resize = torch.jit.script(nn.Sequential(T.Resize([8])))
    assert LANCZOS in operators_of(resize) and LANCZOS in missing_in_oldest_torch(resize)
    predictor = torch.jit.script(Predictor(TinyCNN(), class_names(5)).eval())
    assert "aten::_upsample_bilinear2d_aa" in operators_of(predictor)
    assert missing_in_oldest_torch(predictor) == []


class NewOperatorClassifier(nn.Module):
    """A classifier whose own forward calls an operator torch 2.4.0 lacks, in the branch it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.class_names = class_names(3)
        self.model = nn.Linear(3, 3)
        self.transforms = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.ops.aten._upsample_lanczos2d_aa(x, [16, 16], False, None, None)
        return F.softmax(self.model(x.mean((2, 3))), dim=1)


def test_pt_whose_code_needs_newer_operators_gets_a_warning_with_the_rebuild_hint(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    pt = tmp_path / "new.pt"
    torch.jit.script(NewOperatorClassifier().eval()).save(str(pt))
    assert cli.main(["export", "--output", str(tmp_path / "out.pt"), "--pt", str(pt)]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "aten::_upsample_lanczos2d_aa, which torch 2.4.0 does not have" in warnings[0]
    assert "TorchServe 0.12.0's official images (torch 2.4.0) cannot load it" in warnings[0]
    assert warnings[0].endswith("--rebuild exports it as this tool's Predictor, which loads there")


def test_the_tutorials_pt_is_wrapped_frozen_so_that_torch_2_4_loads_it(tmp_path, caplog):
    """Its scripted T.Resize carries the lanczos branch; frozen, only the bilinear one is left."""
    caplog.set_level(logging.INFO)
    pt = save_tutorial_pt(tmp_path / "tutorial.pt")
    assert LANCZOS in missing_in_oldest_torch(torch.jit.load(str(pt)))
    assert cli.main(["export", "--output", str(tmp_path / "out.pt"), "--pt", str(pt)]) == 0
    assert "saving the wrapped .pt frozen" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert missing_in_oldest_torch(torch.jit.load(str(tmp_path / "out.pt"))) == []


@pytest.fixture
def written_pts(tmp_path, tiny_predictor):
    """One .pt of each kind the tool writes from a small network: scripted, traced, --pt wrapped, --pt --rebuild."""
    paths = {}
    paths["scripted"] = tmp_path / "scripted.pt"
    export_predictor(tiny_predictor(), paths["scripted"])
    paths["traced"] = tmp_path / "traced.pt"
    export_predictor(tiny_predictor(recipe=Recipe(resize=(72,), crop=(64, 64))), paths["traced"], trace=True)
    tutorial = save_tutorial_pt(tmp_path / "tutorial.pt")
    for kind, flags in (("wrapped", []), ("rebuilt", ["--rebuild"])):
        paths[kind] = tmp_path / f"{kind}.pt"
        assert cli.main(["export", "--output", str(paths[kind]), "--pt", str(tutorial), *flags]) == 0
    return paths


def test_every_kind_of_pt_answers_identically_on_torch_2_4(written_pts, tmp_path):
    images = np.stack([image.numpy() for image in random_images([(300, 400)] * 3)])
    np.save(tmp_path / "images.npy", images)
    version = run_in_image_stack(ANSWER_IN_IMAGE_STACK, tmp_path / "images.npy", tmp_path, *written_pts.values())
    assert version.strip().startswith(OLDEST_TORCH)
    for kind, path in written_pts.items():
        m = torch.jit.load(str(path))
        with torch.no_grad():
            expected = np.stack([m.classify(m.preprocess(torch.from_numpy(i)).unsqueeze(0))[0].numpy() for i in images])
        got = np.load(tmp_path / f"{path.name}.npy")
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4, err_msg=kind)
