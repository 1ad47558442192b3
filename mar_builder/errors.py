"""The one error type of the build side: the command line turns it into a message and exit code 1."""


class ExportError(Exception):
    """The model could not be exported or packed; the message says what to fix."""
