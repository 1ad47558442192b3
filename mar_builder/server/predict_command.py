"""`mar-builder predict IMAGE...`: classify images with this checkout's TorchServe, print the top-k as a table."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Tuple

from ..errors import ServeError
from . import checkout_server
from .server_commands import add_state_dir_flag, state_dir

BAR_WIDTH = 30  # characters for a probability of 1
EIGHTHS = " ▏▎▍▌▋▊▉"


def add_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    predict = commands.add_parser("predict", help="classify images with this checkout's TorchServe")
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="any image file (JPEG, PNG, ...)")
    predict.add_argument("--model", help="(default: the one model served)")
    predict.add_argument("--json", action="store_true", help='one JSON line per image: {"image", "status", "answer"}')
    add_state_dir_flag(predict)
    predict.add_argument("--verbose", action="store_true", help="show tracebacks")
    predict.set_defaults(run=run_predict)


def run_predict(args: argparse.Namespace) -> None:
    """Send each image as its own request (the body, as `curl -T` does) and print each answer in order.

    With --json, one line per image: `{"image": path, "status": HTTP status, "answer": the handler's JSON}`.
    An image that is missing, unreadable or refused is named on stderr (in the JSON line too) and the
    others are still classified. Raises ServeError, after printing, when any image was not classified.
    """
    running = checkout_server.require_running(state_dir(args))
    model = running.model(args.model)
    failed = 0
    for image in args.images:
        status, answer = _classify(running.client, model, image)
        if args.json:
            line = {"image": str(image), "status": status, "answer": answer}
            print(json.dumps(line, ensure_ascii=False), flush=True)  # JSON Lines: one image a line
        elif status == 200:
            print(table(str(image), answer), flush=True)
        if status != 200:
            failed += 1
            print(f"error: {image}: {error_line(status, answer)}", file=sys.stderr, flush=True)
    if failed:
        raise ServeError(f"{failed} of {len(args.images)} images not classified (each named above)")


def _classify(client: Any, model: str, image: Path) -> Tuple[int, Any]:
    """(HTTP status, the answer's JSON) for one image; a file that can't be read is status 0."""
    try:
        payload = image.read_bytes()
    except OSError as e:
        return 0, {"type": "UnreadableFile", "message": e.strerror or str(e)}
    try:
        response = client.predict(model, payload)
    except OSError as e:
        raise ServeError(f"TorchServe does not answer on {client.inference_url}: {e}") from e
    try:
        return response.status, response.json()
    except ValueError:
        return response.status, {"message": response.body[:200].decode(errors="replace")}


def table(title: str, answer: Any) -> str:
    """`title`, then one row per label: label, probability in %, a bar. `answer` is the handler's top-k
    object ({label: probability}, most likely first) or a list of them (several images in one request)."""
    answers = answer if isinstance(answer, list) else [answer]
    lines = []
    for i, topk in enumerate(answers):
        lines.append(title if len(answers) == 1 else f"{title} [{i}]")
        if not isinstance(topk, dict) or not all(isinstance(p, (int, float)) for p in topk.values()):
            lines.append("  " + json.dumps(topk))  # not a top-k object: shown as it came
            continue
        width = max((len(str(label)) for label in topk), default=0)
        lines += [f"  {label:<{width}}  {p:7.2%}  {bar(p)}".rstrip() for label, p in topk.items()]
    return "\n".join(lines)


def bar(probability: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar `probability * width` characters long, in eighths of a character."""
    eighths = round(min(max(probability, 0.0), 1.0) * width * 8)
    return ("█" * (eighths // 8) + EIGHTHS[eighths % 8]).rstrip()


def error_line(status: int, answer: Any) -> str:
    """`400 InvalidImage: not a decodable image ...` from the handler's or TorchServe's JSON error body;
    status 0 is a file that could not be read."""
    if not isinstance(answer, dict):
        return f"{status}: {json.dumps(answer)[:200]}"
    text = f"{answer.get('type', '')}: {answer.get('message', '')}".strip(": ")
    return text if status == 0 else f"{status} {text}".rstrip()
