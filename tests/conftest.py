"""Shared fixtures: tiny random classifiers for unit tests, the real default archive for e2e."""

import getpass
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List

import pytest
import torch
from torch import nn

from mar_builder.cli import main as build_main
from mar_builder.deploy.nginx_process import NginxFront
from mar_builder.model.default_model import DEFAULT_RECIPE
from mar_builder.model.export import export_predictor
from mar_builder.model.predictor import Predictor
from mar_builder.model.recipe import Recipe
from mar_builder.server.local_server import LocalTorchServe, TorchServeClient, free_ports


class TinyCNN(nn.Module):
    """A few thousand weights: fast to script, trace and run."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def class_names(n: int) -> List[str]:
    return [f"class_{i}" for i in range(n)]


@pytest.fixture
def tiny_predictor() -> Callable[..., Predictor]:
    def make(num_classes: int = 5, recipe: Recipe = DEFAULT_RECIPE, **kwargs) -> Predictor:
        """A tiny CNN with the tutorial's recipe (resize 256, crop 224, mean and std 0.5) unless told otherwise."""
        torch.manual_seed(0)
        return Predictor(TinyCNN(num_classes), class_names(num_classes), recipe, **kwargs)

    return make


@pytest.fixture
def tiny_pt(tmp_path: Path, tiny_predictor) -> Path:
    """A verified export of a 5-class tiny CNN."""
    path = tmp_path / "model" / "tiny.pt"
    export_predictor(tiny_predictor(), path)
    return path


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    """The real default archive, built once per test session into its own model store."""
    store = tmp_path_factory.mktemp("model_store")
    assert build_main(["build", "--model-store", str(store)]) == 0
    return store


@pytest.fixture(scope="session")
def server(model_store, tmp_path_factory) -> LocalTorchServe:
    """One TorchServe with the default archive on free loopback ports, shared by the e2e tests that
    leave its workers as they are (no scaling, no killing)."""
    with LocalTorchServe(tmp_path_factory.mktemp("torchserve"), model_store) as running:
        yield running


@dataclass(frozen=True)
class FrontedServer:
    """The session's TorchServe behind the nginx front that `deploy nginx` writes: `client` talks to nginx."""

    torchserve: LocalTorchServe
    front: NginxFront
    client: TorchServeClient


@pytest.fixture(scope="session")
def nginx_front(server, tmp_path_factory) -> FrontedServer:
    """Debian's nginx (make nginx) on a free loopback port, with the config `deploy nginx` derives from the
    session server's settings; stopped at the end of the session."""
    out = tmp_path_factory.mktemp("nginx-front")
    port = free_ports(1)[0]
    # As root nginx runs its workers as www-data, which cannot reach pytest's 0700 folders: keep this user.
    user = ["--user", getpass.getuser()] if os.geteuid() == 0 else []
    listen = f"127.0.0.1:{port}"
    config = ["--config", str(server.config)]
    assert build_main(["deploy", "nginx", "--out", str(out), "--listen", listen, *config, *user]) == 0
    with NginxFront(out, "127.0.0.1", port) as front:
        client = TorchServeClient(f"http://{listen}", server.client.management_url, server.client.key_file)
        yield FrontedServer(server, front, client)


@pytest.fixture(params=["torchserve", "nginx"])
def server_or_front(request):
    """The session's TorchServe, reached directly and through the nginx front: request forms are tested both ways."""
    return request.getfixturevalue("server" if request.param == "torchserve" else "nginx_front")
