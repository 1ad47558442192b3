"""Request errors of the serving side, each with its HTTP status: the one place that maps them."""

from __future__ import annotations

from typing import Dict


def status_phrase(text: str) -> str:
    """`text` as an HTTP reason phrase, which goes on the status line: one short printable ASCII line."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:200]


class RequestError(Exception):
    """A request the handler refuses; it fails alone, with `status` and a JSON body."""

    status = 400

    def to_json(self) -> Dict[str, int | str]:
        return {"code": self.status, "type": type(self).__name__, "message": str(self)}


class InvalidRequest(RequestError):
    """The request carries no usable image field (bad JSON, no `data`, bad base64, no file part, a mangled form)."""

    status = 400


class InvalidImage(RequestError):
    """The bytes are not an image this handler decodes, or the image is damaged."""

    status = 400


class ImageTooLarge(RequestError):
    """The image header declares more pixels than the configured limit."""

    status = 413


class TooManyImages(RequestError):
    """The request holds more images than `handler.max_images_per_request`."""

    status = 413


class ExplanationsUnavailable(RequestError):
    """This model gives no explanations: turned off (`handler.explanations: false`), or it computes
    without gradients; the message says which and what to do."""

    status = 404


class ExplainerNotInstalled(RequestError):
    """The worker's Python lacks the explanation library (Captum); predictions are unaffected."""

    status = 501


class ExplanationFailed(RequestError):
    """The explanation of one image failed inside the worker (logged with its traceback); it fails alone."""

    status = 500
