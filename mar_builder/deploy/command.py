"""`mar-builder deploy kserve|kubernetes|nginx`: the layout KServe mounts (config/, model-store/) and its manifests;
the nginx front is written by nginx_front.py."""

import json
import logging
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

import yaml

from ..constants import DEFAULT_MODEL_NAME
from ..errors import SettingsError
from ..server.local_server import CONFIG_FILE, REPO_ROOT, read_properties, write_properties
from .dockerfile import DOCKERFILE, write_dockerfile
from .manifests import (
    INFERENCE_PORT,
    KSERVE_TORCHSERVE_PORT,
    MANAGEMENT_PORT,
    METRICS_PORT,
    MOUNT_PATH,
    STORAGE_URI_PLACEHOLDER,
    ManifestSettings,
    kserve_manifests,
    kubernetes_manifests,
)
from .nginx_front import run_deploy_nginx

logger = logging.getLogger("mar_builder")
TARGETS = ("kserve", "kubernetes")
NGINX = "nginx"  # a front for a running TorchServe, not a pod layout
CONFIG_DIR = "config"
MODEL_STORE_DIR = "model-store"
MANIFEST_FILES = {"kserve": "inferenceservice.yaml", "kubernetes": "kubernetes.yaml"}
# Kubernetes object names (and so the model name here): DNS-1035 labels.
K8S_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# Settings of our config.properties that do not apply in a pod: token (see token_settings) and paths.
DROPPED = ("token_expiration_min",)


@dataclass(frozen=True)
class DeployConfig:
    target: str  # "kserve" or "kubernetes"
    out: Path  # the folder to write: config/, model-store/ and the manifests
    mar: Path  # the archive to ship (built by ./build_mar.sh)
    manifest: ManifestSettings  # name, protocol, storage URI, image, replicas, namespaces

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise SettingsError(f"deploy target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if not K8S_NAME.match(self.manifest.name):
            raise SettingsError(
                f"--name {self.manifest.name!r}: Kubernetes needs lowercase letters, digits and '-', "
                "starting with a letter (build the archive under that name: ./build_mar.sh --name ...)"
            )
        if not self.mar.is_file():
            build = f"./build_mar.sh --name {self.manifest.name}"
            raise SettingsError(f"no archive at {self.mar}: build it first with {build}, or pass --mar")


def archive_settings(mar: Path) -> Dict[str, Any]:
    """The archive's version and its model-config.yaml (workers, batching), read from the .mar."""
    with zipfile.ZipFile(mar) as archive:
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        config_file = manifest["model"].get("configFile")
        config = yaml.safe_load(archive.read(config_file)) if config_file else {}
    return {"version": manifest["model"].get("modelVersion", "1.0"), **(config or {})}


def model_snapshot(name: str, mar: Path) -> str:
    """The model_snapshot line that makes TorchServe load `name` at start, with the archive's own settings."""
    settings = archive_settings(mar)
    entry = {
        "defaultVersion": True,
        "marName": f"{name}.mar",
        "minWorkers": settings.get("minWorkers", 1),
        "maxWorkers": settings.get("maxWorkers", 1),
        "batchSize": settings.get("batchSize", 1),
        "maxBatchDelay": settings.get("maxBatchDelay", 100),
        "responseTimeout": settings.get("responseTimeout", 120),
    }
    snapshot = {"name": "startup.cfg", "modelCount": 1, "models": {name: {str(settings["version"]): entry}}}
    return json.dumps(snapshot, separators=(",", ":"))


def pod_properties(target: str, name: str, mar: Path, protocol: str = "v1") -> Dict[str, str]:
    """config.properties for the pod: ours, with the addresses, paths and token setting a pod needs.

    KServe (torchserve-kfs image): its kserve wrapper listens on 8080 and forwards to TorchServe, so
    TorchServe's inference and management APIs stay on loopback (8085, 8081); only metrics (8082,
    the runtime's prometheus.kserve.io/port) listen on every interface. Kubernetes: TorchServe
    answers inference on 8080 itself; management stays on loopback. With protocol v2 the Open
    Inference Protocol's health and metadata routes (/v2/health/ready, ...) are turned on too.
    """
    properties = {k: v for k, v in read_properties(REPO_ROOT / "config.properties").items() if k not in DROPPED}
    config_dir = f"{MOUNT_PATH}/{CONFIG_DIR}"
    store = f"{MOUNT_PATH}/{MODEL_STORE_DIR}"
    inference = f"http://127.0.0.1:{KSERVE_TORCHSERVE_PORT}" if target == "kserve" else f"http://0.0.0.0:{INFERENCE_PORT}"
    properties.update(
        {
            "inference_address": inference,
            "management_address": f"http://127.0.0.1:{MANAGEMENT_PORT}",
            "metrics_address": f"http://0.0.0.0:{METRICS_PORT}",
            "grpc_inference_port": "7070",
            "grpc_management_port": "7071",
            "model_store": store,
            "allowed_urls": ("file://" + re.escape(store) + r"/[^/]+\.mar").replace("\\", "\\\\"),
            "model_snapshot": model_snapshot(name, mar),
            # TS_* environment variables (KServe's TS_SERVICE_ENVELOPE among them) override this file.
            "enable_envvars_config": "true",
            "metrics_config": f"{config_dir}/metrics.yaml",
            # Token off: KServe's wrapper and the kubelet's probes cannot send TorchServe's per-pod
            # random keys (pytorch/serve#3301), nor could clients behind a Service reach one pod's key.
            # The NetworkPolicy beside the manifests admits only the ingress and the monitoring.
            "disable_token_authorization": "true",
        }
    )
    if protocol == "v2":
        properties["ts_open_inference_protocol"] = "true"
    properties["vmargs"] = re.sub(
        r"(-Dlog4j\.configurationFile=)\S+", lambda m: m.group(1) + f"{config_dir}/log4j2.xml", properties["vmargs"]
    )
    return properties


def write_layout(config: DeployConfig) -> List[Path]:
    """Write the layout and the manifests into config.out; returns the files written.

    Layout: out/config/{config.properties, metrics.yaml, log4j2.xml}, out/model-store/<name>.mar,
    out/inferenceservice.yaml (kserve) or out/kubernetes.yaml (kubernetes), and out/Dockerfile (the
    project's own stack; for kserve with KServe's wrapper, and its out/kserve-entrypoint.sh).
    """
    name = config.manifest.name
    config_dir = config.out / CONFIG_DIR
    store = config.out / MODEL_STORE_DIR
    config_dir.mkdir(parents=True, exist_ok=True)
    store.mkdir(parents=True, exist_ok=True)
    written = [config_dir / "config.properties", config_dir / "metrics.yaml", config_dir / "log4j2.xml"]
    properties = pod_properties(config.target, name, config.mar, config.manifest.protocol)
    header = f"# Written by `mar-builder deploy {config.target}`: TorchServe in a pod, layout under {MOUNT_PATH}.\n"
    write_properties(written[0], properties)
    written[0].write_text(header + written[0].read_text())
    shutil.copyfile(REPO_ROOT / "metrics.yaml", written[1])
    shutil.copyfile(REPO_ROOT / "log4j2.xml", written[2])
    mar = store / f"{name}.mar"
    if config.mar.resolve() != mar.resolve():
        shutil.copyfile(config.mar, mar)
    written.append(mar)
    manifests = kserve_manifests if config.target == "kserve" else kubernetes_manifests
    documents = manifests(config.manifest)
    manifest_path = config.out / MANIFEST_FILES[config.target]
    manifest_path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    written.append(manifest_path)
    written += write_dockerfile(config.out, config.target, name)
    return written


def missing_in_official_image(mar: Path) -> List[str]:
    """The operators the archive's .pt calls that torch 2.4.0 (TorchServe 0.12.0's images) lacks; empty when it
    loads there, or when the archive names no .pt."""
    from ..model.export import torchscript_deprecation_acknowledged
    from ..model.oldest_torch import missing_in_oldest_torch

    with zipfile.ZipFile(mar) as archive:
        serialized = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"].get("serializedFile")
        if not serialized:
            return []
        with tempfile.TemporaryDirectory(prefix="mar_builder-deploy-") as tmp:
            pt = Path(archive.extract(serialized, tmp))
            import torch

            with torchscript_deprecation_acknowledged():
                return missing_in_oldest_torch(torch.jit.load(str(pt), map_location="cpu"))


def add_deploy_parser(commands: Any) -> None:
    """Register `deploy kserve|kubernetes|nginx` on the command line's subparsers."""
    deploy = commands.add_parser(
        "deploy", help="write a KServe or Kubernetes layout and its manifests, or an nginx front for TorchServe"
    )
    deploy.add_argument(
        "target",
        choices=TARGETS + (NGINX,),
        help="kserve: an InferenceService; kubernetes: Deployment, Service, HPA; nginx: nginx.conf for a front that "
        "exposes TorchServe's inference API only (docs/security.md)",
    )
    deploy.add_argument(
        "--out", type=Path, required=True, help="folder to write (config/, model-store/, manifests; nginx.conf)"
    )
    deploy.add_argument("--name", default=DEFAULT_MODEL_NAME, help="model and object name (default: %(default)s)")
    deploy.add_argument("--protocol", choices=("v1", "v2"), default="v1", help="KServe protocolVersion (default: v1)")
    deploy.add_argument("--mar", type=Path, help="the archive (default: model_store/<name>.mar)")
    deploy.add_argument("--storage-uri", default="", help="where you upload --out (default: a placeholder to fill in)")
    deploy.add_argument("--image", default="", help="a TorchServe image instead of the default (see docs/deploy.md)")
    deploy.add_argument("--min-replicas", type=int, default=1)
    deploy.add_argument("--max-replicas", type=int, default=4)
    deploy.add_argument("--verbose", action="store_true", help="show tracebacks")
    front = deploy.add_argument_group("nginx")
    front.add_argument("--listen", default="", help="nginx: HOST:PORT clients connect to (0.0.0.0:8000), or PORT")
    front.add_argument(
        "--config",
        type=Path,
        default=CONFIG_FILE,
        help="nginx: the TorchServe settings to front (default: %(default)s; `serve`'s: .torchserve/config.properties)",
    )
    front.add_argument("--user", default="", help="nginx: the user its workers run as when started as root")
    front.add_argument("--tls-cert", type=Path, help="nginx: PEM certificate (chain); the front then speaks HTTPS")
    front.add_argument("--tls-key", type=Path, help="nginx: the certificate's PEM private key")


def run_deploy(args: Any) -> List[Path]:
    """`deploy`: check the flags, write the layout and the manifests (or nginx.conf); SettingsError says what to fix."""
    nginx_only = {"--listen": args.listen, "--user": args.user, "--tls-cert": args.tls_cert, "--tls-key": args.tls_key}
    if args.target == NGINX:
        pod_only = {"--mar": args.mar, "--storage-uri": args.storage_uri, "--image": args.image}
        given = [flag for flag, value in pod_only.items() if value]
        if given:
            raise SettingsError(f"{', '.join(given)}: not for deploy nginx, which fronts a running TorchServe")
        return run_deploy_nginx(args)
    given = [flag for flag, value in nginx_only.items() if value]
    if given or args.config != CONFIG_FILE:
        given += ["--config"] if args.config != CONFIG_FILE else []
        raise SettingsError(f"{', '.join(given)}: for deploy nginx only")
    if args.target == "kubernetes" and args.storage_uri:
        raise SettingsError(
            "--storage-uri is the InferenceService's (deploy kserve); a Deployment mounts the layout from a "
            "volume: drop --storage-uri"
        )
    try:
        manifest = ManifestSettings(
            name=args.name,
            protocol=args.protocol,
            storage_uri=args.storage_uri,
            image=args.image,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
        )
    except ValueError as e:
        raise SettingsError(str(e)) from None
    mar = args.mar or REPO_ROOT / "model_store" / f"{args.name}.mar"
    config = DeployConfig(args.target, args.out, mar, manifest)
    if not args.image:
        missing = missing_in_official_image(mar)
        if missing:
            from ..model.oldest_torch import describe_missing

            raise SettingsError(
                f"{mar}: {describe_missing(missing)}. The manifests would name those images, whose pods would never "
                "be ready: pass --image NAME (deploy then also writes the Dockerfile to build NAME from, with the "
                "stack the tests ran), or build the archive again so that its .pt loads there (see docs/images.md)"
            )
    written = write_layout(config)
    logger.info("wrote %s", ", ".join(str(p) for p in written))
    logger.info(
        "%s/%s: an image of the stack the tests ran (ONNX Runtime, simplejpeg); the manifests name %s",
        args.out,
        DOCKERFILE,
        args.image or "TorchServe's official 0.12.0 image (the .pt and Pillow: see docs/images.md)",
    )
    if args.target == "kserve" and not args.storage_uri:
        logger.warning(
            "storageUri is the placeholder %s: upload %s there and edit it (or pass --storage-uri)",
            STORAGE_URI_PLACEHOLDER.format(name=args.name),
            args.out,
        )
    return written
