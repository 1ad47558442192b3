"""`mar-builder predict IMAGE...`: classify images with this checkout's TorchServe, print the top-k as a table."""

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import ServeError
from . import checkout_server
from .server_commands import add_state_dir_flag, state_dir

BAR_WIDTH = 30  # characters for a probability of 1
EIGHTHS = " ▏▎▍▌▋▊▉"


def add_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    predict = commands.add_parser("predict", help="classify images with this checkout's TorchServe")
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="any image file (JPEG, PNG, ...)")
    predict.add_argument("--model", help="(default: the one model served)")
    predict.add_argument("--json", action="store_true", help="print TorchServe's answers as JSON, one line per image")
    add_state_dir_flag(predict)
    predict.add_argument("--verbose", action="store_true", help="show tracebacks")
    predict.set_defaults(run=run_predict)


def run_predict(args: argparse.Namespace) -> None:
    """Send each image as its own request (the body, as `curl -T` does) and print each answer in order.
    Raises ServeError naming every image that was not classified, after printing the others."""
    missing = [str(image) for image in args.images if not image.is_file()]
    if missing:
        raise ServeError(f"no such image file: {', '.join(missing)}")
    running = checkout_server.require_running(state_dir(args))
    model = running.model(args.model)
    failed = []
    for image in args.images:
        try:
            response = running.client.predict(model, image.read_bytes())
        except OSError as e:
            raise ServeError(f"TorchServe does not answer on {running.client.inference_url}: {e}") from e
        if response.status != 200:
            failed.append(f"{image}: {error_text(response.status, response.body)}")
        elif args.json:
            print(json.dumps(response.json(), ensure_ascii=False), flush=True)  # JSON Lines: one answer a line
        else:
            print(table(str(image), response.json()), flush=True)
    if failed:
        raise ServeError("; ".join(failed))


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


def error_text(status: int, body: bytes) -> str:
    """`400 InvalidImage: not a decodable image ...` from the handler's or TorchServe's JSON error body."""
    try:
        error = json.loads(body)
        return f"{status} {error.get('type', '')}: {error.get('message', '')}".replace(" :", ":")
    except (ValueError, AttributeError):
        return f"{status}: {body[:200].decode(errors='replace')}"
