"""Kubernetes manifests as Python data: a KServe InferenceService, or a Deployment, Service and HPA."""

from dataclasses import dataclass
from typing import Any, Dict, List

# What KServe's storage initializer mounts storageUri at, and where the TorchServe images start.
MOUNT_PATH = "/mnt/models"
# The TorchServe images' ports: inference, management, metrics (KServe's runtime scrapes 8082).
INFERENCE_PORT = 8080
MANAGEMENT_PORT = 8081
METRICS_PORT = 8082
# Inside a KServe pod the kserve wrapper of the torchserve-kfs image owns 8080 and forwards to here.
KSERVE_TORCHSERVE_PORT = 8085

# Images whose TorchServe matches ours (0.12.0): KServe's runtime pins torchserve-kfs 0.9.0, whose
# TorchServe has no token settings. runtimeVersion swaps the tag of the runtime's image
# (pytorch/torchserve-kfs).
KSERVE_RUNTIME_VERSION = "0.12.0"
KUBERNETES_IMAGE = "pytorch/torchserve:0.12.0-cpu"
STORAGE_URI_PLACEHOLDER = "s3://FILL-IN-BUCKET/models/{name}"

# Sized from docs/performance.md (2-core machine): 2 workers with 1 torch thread each
# took 181 % of a core at 4 clients (the frontend another 10 %), and the soak measured the two
# workers' RSS at 1.3 GB together (1335.9 MB after warm-up, 1334.7 MB at the end).
CPU = "2"
MEMORY_REQUEST = "2Gi"  # 1.3 GB of workers plus the JVM frontend
MEMORY_LIMIT = "3Gi"  # headroom for a 40-megapixel request decoded in one worker
# The workers had 90 % of the CPU at saturation (181 % of 200 %): scale out before that.
HPA_CPU_PERCENT = 70


@dataclass(frozen=True)
class ManifestSettings:
    name: str  # the model and the Kubernetes objects' name (a DNS-1035 label)
    protocol: str = "v1"  # KServe protocolVersion: "v1" or "v2"
    storage_uri: str = ""  # where the layout is uploaded; empty: a placeholder to fill in
    image: str = ""  # a TorchServe image to use instead of the default one
    min_replicas: int = 1
    max_replicas: int = 4
    # Namespaces whose pods may send inference requests (the ingress) and scrape metrics.
    ingress_namespace: str = "istio-system"
    monitoring_namespace: str = "monitoring"

    def __post_init__(self) -> None:
        if self.protocol not in ("v1", "v2"):
            raise ValueError(f"protocol must be v1 or v2, got {self.protocol!r}")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 1 <= min_replicas <= max_replicas, got {self.min_replicas}, {self.max_replicas}")


def resources() -> Dict[str, Any]:
    return {"requests": {"cpu": CPU, "memory": MEMORY_REQUEST}, "limits": {"cpu": CPU, "memory": MEMORY_LIMIT}}


def security_context() -> Dict[str, Any]:
    """KServe's runtime's own container settings: non-root (uid 1000 in the TorchServe images), no capabilities."""
    return {
        "runAsUser": 1000,
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }


def torchserve_args(foreground: bool = False) -> List[str]:
    """The command KServe's runtime runs (kserve-torchserve.yaml); Kubernetes needs it in the foreground."""
    return [
        "torchserve",
        "--start",
        *(["--foreground"] if foreground else []),
        f"--model-store={MOUNT_PATH}/model-store",
        f"--ts-config={MOUNT_PATH}/config/config.properties",
    ]


def inference_service(s: ManifestSettings) -> Dict[str, Any]:
    """A serving.kserve.io/v1beta1 InferenceService for KServe's TorchServe runtime."""
    model: Dict[str, Any] = {
        "modelFormat": {"name": "pytorch"},
        "protocolVersion": s.protocol,
        "storageUri": s.storage_uri or STORAGE_URI_PLACEHOLDER.format(name=s.name),
        "resources": resources(),
    }
    if s.image:
        model["image"] = s.image
    else:
        model["runtimeVersion"] = KSERVE_RUNTIME_VERSION
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": s.name,
            # KServe adds the runtime's prometheus.kserve.io/port (8082) and path (/metrics) to the pod.
            "annotations": {"serving.kserve.io/enable-prometheus-scraping": "true"},
        },
        "spec": {
            "predictor": {
                "minReplicas": s.min_replicas,
                "maxReplicas": s.max_replicas,
                "model": model,
            }
        },
    }


def network_policy(s: ManifestSettings, pod_labels: Dict[str, str], inference_port: int) -> Dict[str, Any]:
    """Admit only the ingress namespace to inference and the monitoring namespace to metrics.

    Token authorization is off in the pods (see config.properties), so this policy is what keeps
    other pods of the cluster from calling the model.
    """

    def from_namespace(namespace: str, port: int) -> Dict[str, Any]:
        selector = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
        return {"from": [{"namespaceSelector": selector}], "ports": [{"protocol": "TCP", "port": port}]}

    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{s.name}-ingress-only"},
        "spec": {
            "podSelector": {"matchLabels": pod_labels},
            "policyTypes": ["Ingress"],
            "ingress": [
                from_namespace(s.ingress_namespace, inference_port),
                from_namespace(s.monitoring_namespace, METRICS_PORT),
            ],
        },
    }


def kserve_manifests(s: ManifestSettings) -> List[Dict[str, Any]]:
    """The InferenceService and the NetworkPolicy around its predictor pods."""
    # Knative's queue-proxy (8012) receives the ingress traffic in a serverless deployment, the kserve
    # wrapper (8080) in a raw one; TorchServe itself listens on loopback only.
    labels = {"serving.kserve.io/inferenceservice": s.name}
    policy = network_policy(s, labels, INFERENCE_PORT)
    policy["spec"]["ingress"][0]["ports"].append({"protocol": "TCP", "port": 8012})
    return [inference_service(s), policy]


def kubernetes_manifests(s: ManifestSettings) -> List[Dict[str, Any]]:
    """A Deployment running a TorchServe image on the layout from a volume, its Service and HPA."""
    labels = {"app.kubernetes.io/name": s.name}
    ping = {"httpGet": {"path": "/ping", "port": INFERENCE_PORT}}
    container = {
        "name": "torchserve",
        "image": s.image or KUBERNETES_IMAGE,
        "args": torchserve_args(foreground=True),
        "ports": [
            {"name": "inference", "containerPort": INFERENCE_PORT},
            {"name": "metrics", "containerPort": METRICS_PORT},
        ],
        "resources": resources(),
        "securityContext": security_context(),
        "volumeMounts": [{"name": "model", "mountPath": MOUNT_PATH, "readOnly": True}],
        # /ping answers once the frontend is up, not per model; the start-up probe waits for the workers.
        "startupProbe": {**ping, "periodSeconds": 5, "failureThreshold": 60},
        "readinessProbe": {**ping, "periodSeconds": 10},
        "livenessProbe": {**ping, "periodSeconds": 20, "failureThreshold": 3},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": s.name, "labels": labels},
        "spec": {
            "replicas": s.min_replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(METRICS_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "containers": [container],
                    # The layout: config/ and model-store/, uploaded to this claim (see docs/deploy.md).
                    "volumes": [{"name": "model", "persistentVolumeClaim": {"claimName": f"{s.name}-model"}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": s.name, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [
                {"name": "inference", "port": INFERENCE_PORT, "targetPort": "inference"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
            ],
        },
    }
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": s.name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": s.name},
            "minReplicas": s.min_replicas,
            "maxReplicas": s.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": HPA_CPU_PERCENT},
                    },
                }
            ],
        },
    }
    return [deployment, service, autoscaler, network_policy(s, labels, INFERENCE_PORT)]
