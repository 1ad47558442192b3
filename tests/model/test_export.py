import collections
import os
import stat

import pytest
import torch
from conftest import TinyCNN, class_names

from mar_builder.errors import ExportError
from mar_builder.model.export import export_predictor, verify_exported
from mar_builder.model.predictor import Predictor
from mar_builder.model.recipe import Recipe

Features = collections.namedtuple("Features", "pooled")


class Unscriptable(TinyCNN):
    """Returns through a namedtuple built from **kwargs: torch.jit.script refuses it, tracing works."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = Features(**{"pooled": torch.flatten(self.features(x), 1)})
        return self.head(parts.pooled)


def test_scriptable_network_is_scripted_and_verified(tiny_predictor, tmp_path):
    path = tmp_path / "out" / "m.pt"
    assert export_predictor(tiny_predictor(), path) == "scripted"
    reloaded = torch.jit.load(str(path))
    assert list(reloaded.class_names) == class_names(5)
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temp files left behind


def test_unscriptable_network_falls_back_to_tracing(tmp_path):
    torch.manual_seed(0)
    eager = Predictor(Unscriptable(3), class_names(3))
    path = tmp_path / "m.pt"
    assert export_predictor(eager, path) == "traced"
    x = torch.randint(0, 256, (1, 3, 300, 200), dtype=torch.uint8)
    torch.testing.assert_close(torch.jit.load(str(path))(x), eager(x))


def test_trace_flag_traces_even_a_scriptable_network(tiny_predictor, tmp_path):
    assert export_predictor(tiny_predictor(), tmp_path / "m.pt", trace=True) == "traced"


def test_class_count_mismatch_fails_and_writes_nothing(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(b"previous export")
    with pytest.raises(ExportError, match="the model outputs 4 classes but 5 class names were given"):
        export_predictor(Predictor(TinyCNN(num_classes=4), class_names(5)), path)
    assert path.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


class DependsOnBatchContent(TinyCNN):
    """Traces to a different graph than it runs eagerly: verification must catch the difference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        if x.mean() > 0:  # data-dependent branch: frozen into the trace
            return logits
        return -logits


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the point of this test
def test_verification_catches_a_trace_that_differs_from_eager(tmp_path):
    torch.manual_seed(0)
    # The trace is taken on torch.rand (mean > 0); normalized random images vary around 0.
    eager = Predictor(DependsOnBatchContent(5), class_names(5), Recipe(mean=(0.9, 0.9, 0.9), std=(0.1, 0.1, 0.1)))
    with pytest.raises(ExportError, match="differs from the eager Predictor"):
        export_predictor(eager, tmp_path / "m.pt", trace=True)
    assert not (tmp_path / "m.pt").exists()


def test_verify_reports_files_that_do_not_reload(tiny_predictor, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(ExportError, match="the exported file does not reload"):
        verify_exported(bad, tiny_predictor())


def test_the_exported_file_is_readable_by_other_accounts_as_umask_allows(tmp_path, tiny_predictor):
    """Not mkstemp's 0600: TorchServe's images run their workers as another user (model-server)."""
    previous = os.umask(0o022)
    try:
        path = tmp_path / "tiny.pt"
        export_predictor(tiny_predictor(), path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
