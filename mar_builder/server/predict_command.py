"""`mar-builder predict IMAGE...`: classify images with this checkout's TorchServe, print the top-k as a table;
with --explain, ask for explanations and draw each as `<name>.explain.png`."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

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
    predict.add_argument(
        "--explain",
        action="store_true",
        help="ask /explanations instead: which pixels made the answer; writes <name>.explain.png per image "
        "(the photo at its size, the heatmap over it, the label and probability on it)",
    )
    predict.add_argument("--out", type=Path, metavar="DIR", help="where --explain writes its pictures (default: .)")
    add_state_dir_flag(predict)
    predict.add_argument("--verbose", action="store_true", help="show tracebacks")
    predict.set_defaults(run=run_predict)


def run_predict(args: argparse.Namespace) -> None:
    """Send each image as its own request (the body, as `curl -T` does) and print each answer in order.

    With --json, one line per image: `{"image": path, "status": HTTP status, "answer": the handler's JSON}`.
    An image that is missing, unreadable or refused is named on stderr (in the JSON line too) and the
    others are still classified. Raises ServeError, after printing, when any image was not classified.

    With --explain, each image goes to /explanations; its answer ({"label", "probability", "attributions"})
    is drawn as `--out`/<name>.explain.png and the line printed says where. Two images of one name would
    overwrite each other's picture: refused (ServeError) before anything is sent.
    """
    if args.out is not None and not args.explain:
        raise ServeError("--out is where --explain writes its pictures: add --explain")
    out_dir = args.out or Path(".")
    if args.explain:
        _check_picture_names(args.images)
        out_dir.mkdir(parents=True, exist_ok=True)
    running = checkout_server.require_running(state_dir(args))
    model = running.model(args.model)
    failed = 0
    for image in args.images:
        status, answer = _classify(running.client, model, image, args.explain)
        if status == 200 and args.explain:
            written = _write_picture(image, answer, out_dir)
            if not args.json:
                print(f"{image}: {answer['label']} {answer['probability']:.2%}, explained in {written}", flush=True)
        if args.json:
            line = {"image": str(image), "status": status, "answer": answer}
            print(json.dumps(line, ensure_ascii=False), flush=True)  # JSON Lines: one image a line
        elif status == 200 and not args.explain:
            print(table(str(image), answer), flush=True)
        if status != 200:
            failed += 1
            print(f"error: {image}: {error_line(status, answer)}", file=sys.stderr, flush=True)
    if failed:
        done = "explained" if args.explain else "classified"
        raise ServeError(f"{failed} of {len(args.images)} images not {done} (each named above)")


def _check_picture_names(images: List[Path]) -> None:
    from .explanation_picture import explanation_path

    seen: Dict[Path, Path] = {}
    for image in images:
        picture = explanation_path(image, Path("."))
        if picture in seen and seen[picture] != image:
            raise ServeError(f"{seen[picture]} and {image} would both be explained in {picture}: rename one")
        seen[picture] = image


def _write_picture(image: Path, answer: Any, out_dir: Path) -> Path:
    from .explanation_picture import explanation_path, explanation_png

    path = explanation_path(image, out_dir)
    path.write_bytes(explanation_png(image.read_bytes(), answer))
    return path


def _classify(client: Any, model: str, image: Path, explain: bool = False) -> Tuple[int, Any]:
    """(HTTP status, the answer's JSON) for one image, a prediction or (`explain`) an explanation;
    a file that can't be read is status 0."""
    try:
        payload = image.read_bytes()
    except OSError as e:
        return 0, {"type": "UnreadableFile", "message": e.strerror or str(e)}
    try:
        response = client.explain(model, payload) if explain else client.predict(model, payload)
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
