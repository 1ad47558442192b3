"""Operate any running TorchServe by hand, given its settings and key file: scale a model's workers, list them,
rotate a key (`mar-builder scale` and `rotate-key` do the same for this checkout's own server)."""

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..errors import ServeError
from .local_server import CONFIG_FILE, KEY_FILE, Response, TorchServeClient, read_properties

logger = logging.getLogger("mar_builder.server.operate")


class OperateError(ServeError):
    """TorchServe is not reachable, or refused the operation; the message quotes its answer."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mar_builder.server.operate", description=__doc__)
    parser.add_argument("--config", type=Path, default=CONFIG_FILE, help="the server's settings (default: %(default)s)")
    parser.add_argument(
        "--key-file",
        type=Path,
        default=Path(KEY_FILE),
        help="written by TorchServe in the directory it was started from (default: ./%(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    scale = commands.add_parser("scale", help="set min and max workers, and wait until TorchServe has them")
    scale.add_argument("workers", type=int, help="how many workers the model keeps")
    workers = commands.add_parser("workers", help="list the model's workers: pid and status")
    for sub in (scale, workers):
        sub.add_argument("--model", default="classifier", help="(default: %(default)s)")
    rotate = commands.add_parser("rotate-key", help="replace a key in key_file.json; the old key stops working")
    rotate.add_argument("api", choices=["inference", "management"])
    return parser


def client_for(config: Path, key_file: Path) -> TorchServeClient:
    properties = read_properties(config)
    missing = [k for k in ("inference_address", "management_address") if k not in properties]
    if missing:
        raise OperateError(f"{config} sets no {' or '.join(missing)}")
    inference, management = properties["inference_address"], properties["management_address"]
    client = TorchServeClient(inference, management, key_file, properties.get("metrics_address", ""))
    if client.token("API") is None:
        raise OperateError(f"no keys in {key_file}: is TorchServe running, started from that directory?")
    return client


def checked(response: Response, what: str) -> Response:
    if response.status != 200:
        try:
            message = response.json().get("message", "")
        except (ValueError, AttributeError):
            message = response.body[:200].decode(errors="replace")
        raise OperateError(f"{what}: TorchServe answered {response.status}: {message}")
    return response


def show_workers(client: TorchServeClient, model: str) -> None:
    workers = client.workers(model)
    logger.info("%s: %d worker(s)", model, len(workers))
    for worker in workers:
        logger.info("  worker %s  pid %s  %s", worker["id"], worker["pid"], worker["status"])


def run(args: argparse.Namespace) -> None:
    client = client_for(args.config, args.key_file)
    if args.command == "scale":
        if args.workers < 1:
            raise OperateError(f"workers must be at least 1, got {args.workers} (0 would leave no one to answer)")
        answer = checked(client.scale(args.model, args.workers), f"scale {args.model} to {args.workers}")
        logger.info("%s", answer.json().get("status", ""))
        show_workers(client, args.model)
    elif args.command == "workers":
        checked(client.describe(args.model), f"describe {args.model}")
        show_workers(client, args.model)
    else:
        checked(client.rotate_key(args.api), f"rotate the {args.api} key")
        expiry = json.loads(args.key_file.read_text())[args.api]["expiration time"]
        logger.info("new %s key in %s, valid until %s", args.api, args.key_file, expiry)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run(args)
    except (OperateError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
