"""The error types of the command line (build side and server commands): each becomes one message and exit code 1."""


class ExportError(Exception):
    """The model could not be exported or packed; the message says what to fix."""


class SettingsError(ExportError):
    """A flag or flag combination is invalid: preprocessing, name, version, top-k, model source."""


class RecipeError(SettingsError, ValueError):
    """A preprocessing recipe (or output head) that torchvision would refuse or the Predictor cannot serve."""


class ClassNamesError(ExportError):
    """The class list is missing, empty, duplicated or malformed."""


class CheckpointError(ExportError):
    """A weights file is missing, not a checkpoint, refused as unsafe, or does not fit the network."""


class ModelSourceError(ExportError):
    """The network could not be built: unknown architecture, a broken model file, or an invalid exported .pt."""


def first_line(error: BaseException | str) -> str:
    """The first non-blank line of an error's message (torch's messages run over many lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines:
        return lines[0]
    return type(error).__name__ if isinstance(error, BaseException) else "no message"


class ServeError(Exception):
    """A server command could not do its job: a port is taken, TorchServe died while starting, no server
    of this checkout runs, or TorchServe refused a call. The message says what to fix."""


class ValidationError(ExportError):
    """`validate` could not run: a missing or malformed archive, photo folder, labels file or eager model."""
