"""Request errors of the serving side, each with its HTTP status: the one place that maps them."""

from __future__ import annotations

from typing import Dict


def status_phrase(text: str) -> str:
    """`text` as an HTTP reason phrase, which goes on the status line: one short printable ASCII line."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:200]


# Messages quote what the client sent (field names, decoder errors): capped, so that an answer
# stays small whatever the request (a form of 400,000 fields once made a 400 of megabytes).
MAX_MESSAGE_CHARS = 1000


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text`, cut to at most `limit` characters with a note of its full length."""
    if len(text) <= limit:
        return text
    note = f"... ({len(text)} characters)"
    return text[: limit - len(note)] + note


class RequestError(Exception):
    """A request the handler refuses; it fails alone, with `status` and a JSON body whose message
    is at most MAX_MESSAGE_CHARS long."""

    status = 400

    def __init__(self, message: object = "") -> None:
        super().__init__(bounded(str(message)))

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


class BodyTooLarge(RequestError):
    """A compressed body decodes to more than `handler.max_decoded_body_bytes`."""

    status = 413


class UnsupportedContentEncoding(RequestError):
    """A Content-Encoding other than gzip or deflate (RFC 9110: 415)."""

    status = 415
