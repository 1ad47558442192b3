"""The server subcommands of `mar-builder`: serve, stop, scale and rotate-key, on this checkout's TorchServe."""

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Sequence

from ..errors import ServeError
from . import checkout_front, checkout_server
from .local_server import CONFIG_FILE, read_properties
from .operate import checked, show_workers
from .server_ports import ports_from

logger = logging.getLogger("mar_builder.serve")


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register serve, stop, scale and rotate-key; each sets `run` to its function."""
    serve = commands.add_parser("serve", help="start this checkout's TorchServe with model_store/<NAME>.mar")
    serve.add_argument("names", nargs="*", default=["classifier"], metavar="NAME", help="(default: classifier)")
    serve.add_argument(
        "--ports",
        type=_ports,
        help="BASE: inference on BASE, management BASE+1, metrics BASE+2, gRPC BASE+3 and BASE+4; "
        "auto: any free ports (default: those in --config)",
    )
    serve.add_argument("--config", type=Path, default=CONFIG_FILE, help="TorchServe settings (default: %(default)s)")
    serve.add_argument("--model-store", type=Path, help="where the archives are (default: --config's model_store)")
    serve.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for READY (default: %(default)s)")
    serve.add_argument(
        "--front",
        metavar="HOST:PORT",
        help="also start the nginx front on HOST:PORT (0.0.0.0:8000 exposes it): inference only, sizes bounded "
        "(docs/security.md); `stop` stops it too",
    )
    serve.set_defaults(run=run_serve)
    stop = commands.add_parser("stop", help="stop the TorchServe this checkout started, and only that one")
    stop.set_defaults(run=run_stop)
    scale = commands.add_parser("scale", help="set a model's workers and wait until TorchServe has them")
    scale.add_argument("workers", type=int, help="how many workers the model keeps")
    scale.add_argument("--model", help="(default: the one model served)")
    scale.set_defaults(run=run_scale)
    rotate = commands.add_parser("rotate-key", help="new keys in key_file.json; the old ones stop working")
    rotate.add_argument(
        "api", nargs="?", choices=["inference", "management", "both"], default="both", help="whose key (default: both)"
    )
    rotate.set_defaults(run=run_rotate_key)
    for sub in (serve, stop, scale, rotate):
        add_state_dir_flag(sub)
        sub.add_argument("--verbose", action="store_true", help="show tracebacks")


def add_state_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="the server's settings, pid file, sockets, logs and key_file.json "
        f"(default: ${checkout_server.STATE_DIR_ENV}, else {checkout_server.STATE_DIR_NAME}/ in this checkout)",
    )


def state_dir(args: argparse.Namespace) -> Path:
    return (args.state_dir or checkout_server.default_state_dir()).resolve()


def run_serve(args: argparse.Namespace) -> None:
    config = args.config.resolve()
    if not config.is_file():
        raise ServeError(f"no settings file {config}; pass --config FILE")
    store = args.model_store or config.parent / read_properties(config).get("model_store", "model_store")
    folder = state_dir(args)
    names = ", ".join(args.names)

    def starting() -> None:
        logger.info("starting TorchServe for %s; its output goes to %s/console.log and %s/logs/", names, folder, folder)
        logger.info("waiting for the workers of %s to be READY (each worker loads the model: 10-60 s)", names)

    if args.front:
        checkout_front.check_listen(args.front)
    started = time.monotonic()
    ports = args.ports or "config"  # None: those of --config
    running = checkout_server.start(folder, store.resolve(), args.names, config, ports, args.timeout, starting)
    client = running.client
    logger.info("TorchServe (pid %d) serves %s, READY after %.0f s", running.pid, names, time.monotonic() - started)
    if args.front:
        try:
            front = checkout_front.start_front(folder, running.properties, args.front)
        except ServeError as e:
            checkout_server.stop(running)
            raise ServeError(f"the nginx front did not start, so TorchServe was stopped: {e}") from None
        logger.info("  front       http://%s (nginx, pid %d): inference only", args.front, front.process.pid)
    logger.info("  inference   %s", client.inference_url)
    logger.info("  management  %s", client.management_url)
    logger.info("  metrics     %s", client.metrics_url)
    logger.info("  keys        %s", client.key_file)
    logger.info("  logs        %s/", running.logs)
    # A server in another state folder is reached only with the same --state-dir (or MAR_BUILDER_STATE_DIR).
    where = "" if folder == checkout_server.default_state_dir() else f" --state-dir {folder}"
    logger.info("classify with `mar-builder predict IMAGE...%s`; stop with `mar-builder stop%s`", where, where)


def run_stop(args: argparse.Namespace) -> None:
    folder = state_dir(args)
    front = checkout_front.stop_front(folder)
    if front is not None:
        logger.info("stopped this checkout's nginx front (pid %d)", front)
    running = checkout_server.find_running(folder)
    if running is None:
        logger.info("no TorchServe of this checkout is running (state folder %s): nothing to stop", folder)
        return
    try:
        models = ", ".join(running.models()) or "no model"
    except ServeError:
        models = "models unknown"
    checkout_server.stop(running)
    logger.info(
        "stopped this checkout's TorchServe (pid %d, %s, %s); other servers are untouched",
        running.pid,
        models,
        running.client.inference_url,
    )


def run_scale(args: argparse.Namespace) -> None:
    running = checkout_server.require_running(state_dir(args))
    if args.workers < 1:
        raise ServeError(f"workers must be at least 1, got {args.workers} (0 would leave no one to answer)")
    model = running.model(args.model)
    logger.info("scaling %s to %d worker(s); waiting until TorchServe has started or stopped them", model, args.workers)
    answer = checked(running.client.scale(model, args.workers), f"scale {model} to {args.workers}")
    logger.info("%s", answer.json().get("status", ""))
    show_workers(running.client, model)


def run_rotate_key(args: argparse.Namespace) -> None:
    running = checkout_server.require_running(state_dir(args))
    apis: Sequence[str] = ("inference", "management") if args.api == "both" else (args.api,)
    client = running.client
    for api in apis:
        checked(client.rotate_key(api), f"rotate the {api} key")
        expiry = json.loads(client.key_file.read_text())[api]["expiration time"]
        logger.info("new %s key in %s, valid until %s; the old one no longer works", api, client.key_file, expiry)


def _ports(value: str) -> object:
    """`--ports`: "auto" -> "free", a number -> the five ports from it."""
    if value == "auto":
        return "free"
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a base port number or 'auto', got {value!r}")
    try:
        return ports_from(int(value))
    except ServeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
