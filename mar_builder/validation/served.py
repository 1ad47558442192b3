"""(c): the archive served by a real TorchServe on free loopback ports, through the handler's own decode path."""

import json
import tempfile
from pathlib import Path
from typing import Any, Dict, Sequence

import torch

from ..errors import ValidationError
from ..server.local_server import LocalTorchServe, ServerError
from .mar_files import MarManifest, copy_answering_all_classes


class ServedArchive:
    """A copy of the archive whose handler answers every class (topk = number of classes), served by a
    TorchServe of its own; the user's archive and its settings stay as they are otherwise. Stopped on exit."""

    def __init__(self, mar: Path, manifest: MarManifest, class_names: Sequence[str]) -> None:
        self.mar = mar
        self.manifest = manifest
        self.index: Dict[str, int] = {name: i for i, name in enumerate(class_names)}
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.server: LocalTorchServe | None = None

    def __enter__(self) -> "ServedArchive":
        self._tmp = tempfile.TemporaryDirectory(prefix="mar_builder-validate-")
        root = Path(self._tmp.name)
        name = self.manifest.model_name
        try:
            (root / "store").mkdir()
            copy_answering_all_classes(self.mar, self.manifest, len(self.index), root / "store")
            self.server = LocalTorchServe(root / "torchserve", root / "store", models=(f"{name}={name}.mar",))
            self.server.start()
        except ServerError as e:
            self.__exit__()
            raise ValidationError(f"TorchServe could not serve {self.mar.name}: {e}") from None
        except BaseException:  # SIGTERM or Ctrl-C while it starts: `with` does not call __exit__ for us
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def classify(self, photo: bytes) -> torch.Tensor:
        """The served probabilities, shaped (number of classes,), float32: one photo's raw bytes sent as
        `application/octet-stream`, as `curl -T photo.jpg` sends them.

        Raises ValidationError with the server's message when it refuses the photo or does not answer.
        """
        assert self.server is not None, "use ServedArchive as a context manager"
        try:
            response = self.server.client.predict(self.manifest.model_name, photo, timeout=120.0)
        except OSError as e:  # urllib's URLError, a reset connection, a timeout: this photo fails, the run goes on
            raise ValidationError(f"no answer from the server: {e}") from None
        if response.status != 200:
            try:
                body = response.json()
                detail = f"{body.get('type', '')}: {body.get('message', '')}".strip(": ")
            except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
                detail = response.body[:200].decode(errors="replace")
            raise ValidationError(f"the server answered {response.status} {detail}")
        answer = response.json()
        if isinstance(answer, list) and len(answer) == 1:
            answer = answer[0]
        if not isinstance(answer, dict):
            raise ValidationError(f"the server answered {type(answer).__name__}, not a top-k object")
        probabilities = torch.zeros(len(self.index))
        for label, probability in answer.items():
            if label not in self.index:
                raise ValidationError(f"the server answered label {label!r}, which is not among the .pt's class_names")
            probabilities[self.index[label]] = float(probability)
        return probabilities
